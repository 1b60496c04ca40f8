import { B, type StateTable } from './state-table.ts';
import type { ShardBackend, ShardUpstream } from './shard-config.ts';

/** Breaker values in the state table (as in `actors/breaker.ts`; kept here so shards load no xstate). */
const BREAKER_CLOSED = 0;
const BREAKER_HALF_OPEN = 2;

/** What a shard tells a backend's breaker (the events of `actors/breaker.ts`). */
export type BreakerReport = 'failures' | 'trial.ok' | 'trial.failed' | 'trial.aborted';

/**
 * Picks a backend for a new connection. Backends the control plane marked unhealthy, those
 * whose breaker is open, and those this connection already tried are skipped; `undefined` means
 * none is usable. A half-open backend is picked only by the one connection that takes its trial
 * permit (compare-and-swap in the state table, so exactly one across all shards).
 *
 * It also keeps the breaker's books on the shard side: every failed connect adds to the
 * backend's consecutive-failure count in the table, a success resets it, and the rare events
 * (the count reaching the threshold, a trial's outcome) are reported to the control plane. The algorithm is the upstream's `balance`:
 *
 * - `round_robin`: in list order (each shard starts at its own offset).
 * - `weighted_round_robin`: NGINX's smooth weighted round robin: weights 5, 1, 1 give
 *   A A B A C A A, with no bursts.
 * - `least_connections`: the fewest active connections, counted across all shards in the state
 *   table; ties go round robin.
 * - `p2c`: power of two random choices over active connections (Envoy's least_request).
 *
 * @example
 * const b = new Balancer(upstream, table).pick(); // undefined when none is usable
 */
export class Balancer {
  readonly upstream: ShardUpstream;
  readonly #table: StateTable;
  readonly #pick: (exclude: readonly ShardBackend[] | undefined) => ShardBackend | undefined;
  #next = 0;
  /** Smooth WRR: each backend's current weight. */
  readonly #current: number[];
  readonly #random: () => number;
  readonly #report: (slot: number, event: BreakerReport) => void;
  /** Whether the last {@link pick} took a half-open trial permit (valid until the next pick). */
  trial = false;

  /**
   * `offset` spreads shards over the list, so N shards do not all start on the first backend;
   * `report` carries breaker events to the control plane.
   */
  constructor(upstream: ShardUpstream, table: StateTable, offset = 0, random: () => number = Math.random, report: (slot: number, event: BreakerReport) => void = () => {}) {
    this.upstream = upstream;
    this.#table = table;
    this.#random = random;
    this.#report = report;
    this.#next = upstream.backends.length > 0 ? offset % upstream.backends.length : 0;
    this.#current = upstream.backends.map(() => 0);
    switch (upstream.balance) {
      case 'weighted_round_robin':
        this.#pick = (ex) => this.#smoothWeighted(ex);
        break;
      case 'least_connections':
        this.#pick = (ex) => this.#leastConnections(ex);
        break;
      case 'p2c':
        this.#pick = (ex) => this.#powerOfTwo(ex);
        break;
      default:
        this.#pick = (ex) => this.#roundRobin(ex);
    }
  }

  pick(exclude?: readonly ShardBackend[]): ShardBackend | undefined {
    let ex = exclude;
    for (;;) {
      this.trial = false;
      const b = this.#pick(ex);
      if (!b || this.#table.backendGet(b.slot, B.BREAKER) !== BREAKER_HALF_OPEN) return b;
      if (this.#table.backendCas(b.slot, B.PERMIT, 1, 0)) {
        this.trial = true;
        return b;
      }
      // Another connection (on any shard) took the trial first.
      ex = ex ? [...ex, b] : [b];
    }
  }

  #usable(b: ShardBackend, exclude: readonly ShardBackend[] | undefined): boolean {
    if (exclude?.includes(b)) return false;
    if (this.#table.backendGet(b.slot, B.HEALTHY) !== 1) return false;
    // Drained or in maintenance through the admin API: no new traffic.
    if (this.#table.backendGet(b.slot, B.ADMIN) !== 0) return false;
    const breaker = this.#table.backendGet(b.slot, B.BREAKER);
    if (breaker === BREAKER_CLOSED) return true;
    return breaker === BREAKER_HALF_OPEN && this.#table.backendGet(b.slot, B.PERMIT) === 1;
  }

  /** A connect to `b` failed (refused, reset, timed out); `trial` as {@link trial} was at its pick. */
  failed(b: ShardBackend, trial: boolean): void {
    const threshold = this.upstream.failureThreshold;
    if (threshold <= 0) return;
    if (trial) return this.#report(b.slot, 'trial.failed');
    const n = this.#table.backendAdd(b.slot, B.FAILS, 1) + 1;
    // Until the breaker has opened, each further failure asks again: a report lost while the
    // breaker restarts is made up by the next one.
    if (n >= threshold && this.#table.backendGet(b.slot, B.BREAKER) === BREAKER_CLOSED) this.#report(b.slot, 'failures');
  }

  /** A connect to `b` succeeded: the failures are no longer consecutive. */
  succeeded(b: ShardBackend, trial: boolean): void {
    if (this.upstream.failureThreshold <= 0) return;
    // Read before write: a busy backend's cell is not written (and its cache line not bounced
    // between cores) on every connection.
    if (this.#table.backendGet(b.slot, B.FAILS) !== 0) this.#table.backendSet(b.slot, B.FAILS, 0);
    if (trial) this.#report(b.slot, 'trial.ok');
  }

  /** The client left before a trial connect finished: the permit goes back. */
  abandoned(b: ShardBackend, trial: boolean): void {
    if (trial && this.upstream.failureThreshold > 0) this.#report(b.slot, 'trial.aborted');
  }

  #roundRobin(exclude: readonly ShardBackend[] | undefined): ShardBackend | undefined {
    const list = this.upstream.backends;
    const n = list.length;
    for (let i = 0; i < n; i++) {
      const b = list[(this.#next + i) % n]!;
      if (!this.#usable(b, exclude)) continue;
      this.#next = (this.#next + i + 1) % n;
      return b;
    }
    return undefined;
  }

  /** NGINX `ngx_http_upstream_get_peer`: add each weight, take the largest, subtract the total. */
  #smoothWeighted(exclude: readonly ShardBackend[] | undefined): ShardBackend | undefined {
    const list = this.upstream.backends;
    let total = 0;
    let best = -1;
    for (let i = 0; i < list.length; i++) {
      const b = list[i]!;
      // A weight set through the admin API wins over the config's (stored plus one; 0: none).
      const set = this.#table.backendGet(b.slot, B.WEIGHT);
      const w = set > 0 ? set - 1 : b.weight;
      if (w <= 0 || !this.#usable(b, exclude)) continue;
      this.#current[i]! += w;
      total += w;
      if (best < 0 || this.#current[i]! > this.#current[best]!) best = i;
    }
    if (best < 0) return undefined;
    this.#current[best]! -= total;
    return list[best];
  }

  #active(b: ShardBackend): number {
    return this.#table.backendGet(b.slot, B.ACTIVE);
  }

  #leastConnections(exclude: readonly ShardBackend[] | undefined): ShardBackend | undefined {
    const list = this.upstream.backends;
    const n = list.length;
    let best: ShardBackend | undefined;
    let bestIdx = 0;
    for (let i = 0; i < n; i++) {
      const idx = (this.#next + i) % n;
      const b = list[idx]!;
      if (!this.#usable(b, exclude)) continue;
      if (!best || this.#active(b) < this.#active(best)) {
        best = b;
        bestIdx = idx;
      }
    }
    if (best) this.#next = (bestIdx + 1) % n;
    return best;
  }

  #powerOfTwo(exclude: readonly ShardBackend[] | undefined): ShardBackend | undefined {
    const usable = this.upstream.backends.filter((b) => this.#usable(b, exclude));
    if (usable.length <= 1) return usable[0];
    const i = Math.floor(this.#random() * usable.length);
    let j = Math.floor(this.#random() * (usable.length - 1));
    if (j >= i) j++;
    const a = usable[i]!;
    const b = usable[j]!;
    return this.#active(b) < this.#active(a) ? b : a;
  }
}
