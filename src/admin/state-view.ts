import { B, L, type StateTable } from '../workers/state-table.ts';
import { sendJson } from './http.ts';
import type { RouteHandler } from './routes.ts';

/**
 * `GET /state`: what the shared state table holds for each listener and backend right now, the
 * cells that must all come back to zero once every connection and hub client has ended. A count
 * stuck above zero with nothing connected is a place that was taken and never given back (a
 * connection whose end was never counted, a shard's places not reclaimed): the symptom operators
 * see as a listener refusing connections at its limit, or a balancer avoiding an idle backend.
 */

/** One listener's row; `listener` is `null` for a row retired by a reload that is still draining. */
export interface ListenerStateView {
  listener: string | null;
  slot: number;
  /** Live connections (or hub clients) across shards: the count `maxConnections` is checked against. */
  active: number;
  /** Each shard's own count of its live connections, index = shard. */
  activeByShard: number[];
  /** Per-IP entries held (`maxConnectionsPerIp`): one per client address and shard with a place. */
  perIpEntries: number;
  /** Connections admitted without a per-IP count (fail open); a counter, not a place, so never reset. */
  perIpUntracked: number;
}

/** One backend's row; `backend` is `UPSTREAM/ADDRESS`, or `null` for a retired row still draining. */
export interface BackendStateView {
  backend: string | null;
  slot: number;
  /** Connections on this backend across shards (what least_connections and p2c read). */
  active: number;
  /** Each shard's share of `active`, index = shard. */
  activeByShard: number[];
}

/** The answer of `GET /state`. `idle` is true when every count above (untracked aside) is zero. */
export interface StateView {
  idle: boolean;
  listeners: ListenerStateView[];
  backends: BackendStateView[];
}

/** Where a view finds the rows: the slot allocators' names and rows, retired rows included. */
export interface StateViewSource {
  table: StateTable;
  shardCount: number;
  /** Listener names and their rows (the current config). */
  listeners: [string, number][];
  /** Every listener row in use, the retired ones still draining included. */
  listenerRows: number[];
  /** Backend names (`UPSTREAM/ADDRESS`) and their rows. */
  backends: [string, number][];
  backendRows: number[];
}

function named(entries: [string, number][], rows: number[]): [string | null, number][] {
  const known = new Set(entries.map(([, s]) => s));
  return [...entries, ...rows.filter((s) => !known.has(s)).map((s): [null, number] => [null, s])];
}

/**
 * Reads the view from the table (lock-free loads: a snapshot that may be mid-update by a shard).
 *
 * @example
 * const view = stateView({ table, shardCount: 2, listeners: slots.entries(), listenerRows: slots.used(), backends: [], backendRows: [] });
 * if (!view.idle) log.warn({ view }, 'state table not idle');
 */
export function stateView(src: StateViewSource): StateView {
  const { table, shardCount } = src;
  const shards = Array.from({ length: shardCount }, (_, i) => i);
  const listeners = named(src.listeners, src.listenerRows).map(([listener, slot]) => ({
    listener,
    slot,
    active: table.listenerActiveAll(slot),
    activeByShard: shards.map((s) => table.listenerGet(s, slot, L.ACTIVE)),
    perIpEntries: table.ipEntries(slot),
    perIpUntracked: table.ipUntracked(slot),
  }));
  const backends = named(src.backends, src.backendRows).map(([backend, slot]) => ({
    backend,
    slot,
    active: table.backendGet(slot, B.ACTIVE),
    activeByShard: shards.map((s) => table.backendShardActive(s, slot)),
  }));
  const zero = (ns: number[]): boolean => ns.every((n) => n === 0);
  const idle =
    listeners.every((l) => l.active === 0 && l.perIpEntries === 0 && zero(l.activeByShard)) &&
    backends.every((b) => b.active === 0 && zero(b.activeByShard));
  return { idle, listeners, backends };
}

/**
 * The `GET /state` handler: the backend's view, or an empty idle one for a backend without a
 * state table (test fakes).
 */
export const stateRoute: RouteHandler = ({ res, backend }) => {
  sendJson(res, 200, backend.stateView?.() ?? { idle: true, listeners: [], backends: [] });
};
