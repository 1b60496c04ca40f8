import { B, type StateTable } from './state-table.ts';
import type { ShardBackend, ShardUpstream } from './shard-config.ts';

/** The breaker value of an open breaker in the state table (0 closed, 1 open, 2 half-open). */
const BREAKER_OPEN = 1;

/**
 * Picks a backend for a new connection. Backends the control plane marked unhealthy, those
 * whose breaker is open, and those this connection already tried are skipped; `undefined` means
 * none is usable. The algorithm is the upstream's `balance`:
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

  /** `offset` spreads shards over the list, so N shards do not all start on the first backend. */
  constructor(upstream: ShardUpstream, table: StateTable, offset = 0, random: () => number = Math.random) {
    this.upstream = upstream;
    this.#table = table;
    this.#random = random;
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
    return this.#pick(exclude);
  }

  #usable(b: ShardBackend, exclude: readonly ShardBackend[] | undefined): boolean {
    if (exclude?.includes(b)) return false;
    if (this.#table.backendGet(b.slot, B.HEALTHY) !== 1) return false;
    return this.#table.backendGet(b.slot, B.BREAKER) !== BREAKER_OPEN;
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
      if (b.weight <= 0 || !this.#usable(b, exclude)) continue;
      this.#current[i]! += b.weight;
      total += b.weight;
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
