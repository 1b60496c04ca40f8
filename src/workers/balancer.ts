import { B, type StateTable } from './state-table.ts';
import type { ShardBackend, ShardUpstream } from './shard-config.ts';

/**
 * Picks a backend for a new connection, skipping backends the control plane marked unhealthy in
 * the state table and those this connection already tried. Round robin here; the other
 * algorithms of the contract (weighted, least connections, p2c) plug in behind `pick`.
 *
 * @example
 * const b = new Balancer(upstream, table).pick(); // undefined when none is usable
 */
export class Balancer {
  readonly upstream: ShardUpstream;
  readonly #table: StateTable;
  #next = 0;

  /** `offset` spreads shards over the list, so N shards do not all start on the first backend. */
  constructor(upstream: ShardUpstream, table: StateTable, offset = 0) {
    this.upstream = upstream;
    this.#table = table;
    this.#next = upstream.backends.length > 0 ? offset % upstream.backends.length : 0;
  }

  pick(exclude?: readonly ShardBackend[]): ShardBackend | undefined {
    const list = this.upstream.backends;
    const n = list.length;
    for (let i = 0; i < n; i++) {
      const b = list[(this.#next + i) % n]!;
      if (exclude?.includes(b)) continue;
      if (this.#table.backendGet(b.slot, B.HEALTHY) !== 1) continue;
      this.#next = (this.#next + i + 1) % n;
      return b;
    }
    return undefined;
  }
}
