import type { Observable } from 'rxjs';
import type { TreeNode } from '../runtime/actor.ts';
import type { ActorEvent } from '../runtime/events.ts';
import { AdminHttpError, intParam, sendJson } from './http.ts';
import type { RouteHandler } from './routes.ts';

/**
 * `GET /actors/top`: the busiest actors over a window, as recon's `proc_window` finds the busiest
 * Erlang processes. By `bytes`, the tree is sampled at the start and at the end of the window and
 * each actor's `bytesIn + bytesOut` (what a connection's `/actors` node shows) is diffed; an actor
 * born during the window counts from zero, one that ended is gone. By `events`, the actor event
 * stream is counted per actor for the window (debug mode only: there are no events otherwise).
 */

/** What to rank by. */
export type TopBy = 'bytes' | 'events';

/** The parsed query of `GET /actors/top`. */
export interface TopQuery {
  by: TopBy;
  windowMs: number;
  limit: number;
}

/** One ranked actor. `bytes*` are for `by=bytes`, `events` for `by=events`. */
export interface TopRow {
  id: string;
  type: string;
  state?: string;
  /** Bytes moved during the window, both ways. */
  bytes?: number;
  bytesIn?: number;
  bytesOut?: number;
  /** Lifecycle events during the window. */
  events?: number;
  peer?: string;
  backend?: string;
}

/** The answer of `GET /actors/top`. */
export interface TopAnswer {
  by: TopBy;
  windowMs: number;
  limit: number;
  rows: TopRow[];
}

export const TOP_WINDOW_MIN_MS = 100;
export const TOP_WINDOW_MAX_MS = 60_000;
const DEFAULT_WINDOW_MS = 5_000;
const DEFAULT_LIMIT = 10;

/**
 * A window as `5s`, `500ms`, `1m` or a bare number of seconds, within 100 ms and 60 s; a 400
 * `bad_query` naming `window` otherwise.
 *
 * @example
 * parseWindow('1.5s'); // 1500
 */
export function parseWindow(raw: string): number {
  const m = /^(\d{1,6}(?:\.\d{1,3})?)(ms|s|m)?$/.exec(raw);
  const ms = m ? Number(m[1]) * (m[2] === 'ms' ? 1 : m[2] === 'm' ? 60_000 : 1_000) : NaN;
  if (!(ms >= TOP_WINDOW_MIN_MS && ms <= TOP_WINDOW_MAX_MS)) {
    throw new AdminHttpError(400, 'bad_query', `window must be a duration from ${TOP_WINDOW_MIN_MS}ms to ${TOP_WINDOW_MAX_MS / 1000}s (5s, 500ms, 1m)`, { extra: { param: 'window' } });
  }
  return Math.round(ms);
}

/**
 * Reads `?by=bytes|events&window=5s&limit=10` (defaults: bytes, 5 s, 10; limit at most 1000).
 *
 * @example
 * parseTopQuery(new URLSearchParams('by=events&window=2s')); // { by: 'events', windowMs: 2000, limit: 10 }
 */
export function parseTopQuery(query: URLSearchParams): TopQuery {
  const byAll = query.getAll('by');
  if (byAll.length > 1 || (byAll.length === 1 && byAll[0] !== 'bytes' && byAll[0] !== 'events')) {
    throw new AdminHttpError(400, 'bad_query', 'by must be bytes or events', { extra: { param: 'by' } });
  }
  const windows = query.getAll('window');
  if (windows.length > 1) throw new AdminHttpError(400, 'bad_query', 'window must be given once', { extra: { param: 'window' } });
  return {
    by: (byAll[0] as TopBy | undefined) ?? 'bytes',
    windowMs: windows.length ? parseWindow(windows[0]!) : DEFAULT_WINDOW_MS,
    limit: intParam(query, 'limit', 1_000) ?? DEFAULT_LIMIT,
  };
}

/** Every node of a tree that shows byte counters, by id. */
export function byteCounters(root: TreeNode): Map<string, TreeNode & { bytesIn: number; bytesOut: number }> {
  const out = new Map<string, TreeNode & { bytesIn: number; bytesOut: number }>();
  const walk = (n: TreeNode): void => {
    if (typeof n.bytesIn === 'number' && typeof n.bytesOut === 'number') out.set(n.id, n as TreeNode & { bytesIn: number; bytesOut: number });
    for (const c of n.children) walk(c);
  };
  walk(root);
  return out;
}

const byCountThenId = (key: 'bytes' | 'events') => (a: TopRow, b: TopRow): number => b[key]! - a[key]! || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/**
 * The actors that moved the most bytes between two samples of the tree, most first (ties by id);
 * only those that moved some. An actor only in `after` counts from zero.
 *
 * @example
 * const rows = topByBytes(await backend.tree({}), await later(), 10);
 */
export function topByBytes(before: TreeNode, after: TreeNode, limit: number): TopRow[] {
  const start = byteCounters(before);
  const rows: TopRow[] = [];
  for (const [id, n] of byteCounters(after)) {
    const s = start.get(id);
    const bytesIn = n.bytesIn - (s?.bytesIn ?? 0);
    const bytesOut = n.bytesOut - (s?.bytesOut ?? 0);
    if (bytesIn + bytesOut <= 0) continue;
    rows.push({
      id,
      type: n.type,
      state: n.state,
      bytes: bytesIn + bytesOut,
      bytesIn,
      bytesOut,
      ...(typeof n.peer === 'string' && { peer: n.peer }),
      ...(typeof n.backend === 'string' && { backend: n.backend }),
    });
  }
  return rows.sort(byCountThenId('bytes')).slice(0, limit);
}

/**
 * Counts actor events per actor until `signal` aborts, then resolves with the busiest, most
 * first (ties by id). Unsubscribes when it resolves.
 *
 * @example
 * const rows = await countEvents(backend.actorEvents$, AbortSignal.timeout(5_000), 10);
 */
export function countEvents(events$: Observable<ActorEvent>, signal: AbortSignal, limit: number): Promise<TopRow[]> {
  const counts = new Map<string, TopRow & { events: number }>();
  const sub = events$.subscribe((e) => {
    const row = counts.get(e.id);
    if (row) {
      row.events++;
      row.type = e.actorType;
    } else counts.set(e.id, { id: e.id, type: e.actorType, events: 1 });
    if (e.type === 'state') counts.get(e.id)!.state = e.state;
  });
  return new Promise((resolve) => {
    const done = (): void => {
      sub.unsubscribe();
      resolve([...counts.values()].sort(byCountThenId('events')).slice(0, limit));
    };
    if (signal.aborted) done();
    else signal.addEventListener('abort', done, { once: true });
  });
}

/** Resolves after `ms`, or at once when `signal` aborts; the timer never outlives either. */
function wait(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * The `GET /actors/top` handler. The answer comes after the window; a client that leaves (or
 * a server that closes) ends the wait early and nothing is sent.
 */
export const topRoute: RouteHandler = async ({ res, query, backend }) => {
  const q = parseTopQuery(query);
  if (q.by === 'events' && !backend.debug) {
    throw new AdminHttpError(404, 'debug_disabled', 'by=events counts actor events, which exist only in debug mode: start gatehouse with --debug');
  }
  const gone = new AbortController();
  const onClose = (): void => gone.abort();
  res.once('close', onClose);
  try {
    let rows: TopRow[];
    if (q.by === 'events') {
      const window = new AbortController();
      const counted = countEvents(backend.actorEvents$, window.signal, q.limit);
      await wait(q.windowMs, gone.signal);
      window.abort();
      rows = await counted;
    } else {
      const before = await backend.tree({});
      await wait(q.windowMs, gone.signal);
      if (gone.signal.aborted) return;
      rows = topByBytes(before, await backend.tree({}), q.limit);
    }
    if (gone.signal.aborted) return;
    sendJson(res, 200, { by: q.by, windowMs: q.windowMs, limit: q.limit, rows } satisfies TopAnswer);
  } finally {
    res.off('close', onClose);
  }
};
