import type net from 'node:net';
import type { Logger } from 'pino';
import { IP, L, ipKey, type StateTable } from '../workers/state-table.ts';
import type { ShardListener } from '../workers/shard-config.ts';
import { listenerRateAdmit, rateParams, type RateParams } from '../cluster/ratelimit-shard.ts';

/** Why a listener refused a new connection: its `rateLimit`, `maxConnections` or `maxConnectionsPerIp`. */
export type Refusal = 'rate_limited' | 'over_limit' | 'per_ip';

/** Why a new connection was refused, or the per-IP key it holds (0: none) when admitted. */
export type Admission = { ok: true; ipKey: number } | { ok: false; reason: Refusal };

/**
 * A listener's limits on new connections, the same for every protocol, all held for the listener
 * as a whole across shards through the state table: `rateLimit` (one GCRA cell), then
 * `maxConnections` (the listener-wide count), then `maxConnectionsPerIp` (the keyed per-IP
 * table; only read when configured, as `remoteAddress` costs a getpeername()). A refusal is
 * counted (`rate_limited` / `over_limit`) and gives back what it had taken; the caller closes or
 * answers the connection and logs. An admitted connection holds a listener place (give it back
 * with `table.listenerRelease`) and its per-IP place (`table.ipRelease` with the returned key).
 *
 * @example
 * const a = limits.admit(socket);
 * if (!a.ok) return refuse(socket, a.reason);
 */
export class ListenerLimits {
  readonly #table: StateTable;
  readonly #shard: number;
  readonly #log: Logger;
  #listener!: ShardListener;
  /** GCRA parameters (ns) and lease size, or undefined when the listener has no rate limit. */
  #rate: RateParams | undefined;
  #ipFullWarned = false;

  constructor(table: StateTable, shard: number, listener: ShardListener, log: Logger) {
    this.#table = table;
    this.#shard = shard;
    this.#log = log;
    this.configure(listener);
  }

  /** New settings (a reload): the rate limit keeps its cell, so it is neither refilled nor emptied. */
  configure(l: ShardListener): void {
    this.#listener = l;
    if (!l.rateLimit) {
      this.#rate = undefined;
      return;
    }
    // GCRA: emission interval T = 1e9 / perSecond ns, and a burst of burst × T.
    const t = BigInt(Math.max(1, Math.round(1e9 / l.rateLimit.perSecond)));
    this.#rate = rateParams(t, t * BigInt(l.rateLimit.burst));
  }

  admit(socket: net.Socket): Admission {
    const table = this.#table;
    const { slot, maxConnections, maxConnectionsPerIp } = this.#listener;
    // In cluster mode with Redis up, from the instance's lease of the shared bucket (./cluster/ratelimit-shard.ts).
    if (this.#rate !== undefined && !listenerRateAdmit(table, slot, this.#listener.name, this.#rate)) {
      table.listenerAdd(this.#shard, slot, L.RATE_LIMITED, 1);
      return { ok: false, reason: 'rate_limited' };
    }
    if (!table.listenerAcquire(slot, maxConnections > 0 ? maxConnections : 0x7fffffff)) {
      table.listenerAdd(this.#shard, slot, L.OVER_LIMIT, 1);
      return { ok: false, reason: 'over_limit' };
    }
    let key = 0;
    if (maxConnectionsPerIp > 0 && socket.remoteAddress !== undefined) {
      key = ipKey(socket.remoteAddress);
      const r = table.ipAcquire(slot, this.#shard, key, maxConnectionsPerIp);
      if (r === IP.REJECTED) {
        table.listenerRelease(slot);
        table.listenerAdd(this.#shard, slot, L.OVER_LIMIT, 1);
        return { ok: false, reason: 'per_ip' };
      }
      if (r === IP.UNTRACKED) key = this.#untracked();
    }
    return { ok: true, ipKey: key };
  }

  /**
   * A connection admitted without a per-IP count: the IP's stripe of the table is full (or its
   * lock was held too long). Refusing would turn a full table into refusing every new client, so
   * the limit fails open for it; the count shows in the tree (`perIpUntracked`). Returns the key
   * the connection holds: none.
   */
  #untracked(): number {
    if (!this.#ipFullWarned) {
      this.#ipFullWarned = true;
      this.#log.warn({ maxConnectionsPerIp: this.#listener.maxConnectionsPerIp }, 'per-IP table full: a connection was admitted without a per-IP count (logged once)');
    }
    return 0;
  }
}
