/**
 * The upstream side of a shard's http listeners: per upstream a balancer (the L4 one, with the
 * health and breaker state every shard reads from the state table), and per backend a keep-alive
 * {@link UpstreamPool}. One per shard, shared by its http listeners; a reload keeps the pools of
 * backends that stay (their warm sockets too) and closes the others once their requests end.
 */
import type { Balancer } from '../workers/balancer.ts';
import type { ShardBackend, ShardUpstream } from '../workers/shard-config.ts';
import { UpstreamPool, type PoolHandlers } from './pool.ts';

/** Pool keys when an upstream's config does not say (the schema's defaults). */
const DEFAULT_POOL: NonNullable<ShardUpstream['pool']> = { maxConnections: 256, idleTimeoutMs: 4_000 };

/**
 * One upstream on this shard.
 *
 * @example
 * const u = upstreams.get('app'); const b = u?.balancer.pick(); const pool = b && u.pool(b);
 */
export interface HttpUpstream {
  readonly config: ShardUpstream;
  readonly balancer: Balancer;
  /** The keep-alive pool toward backend `b`, made on first use. */
  pool(b: ShardBackend): UpstreamPool<unknown>;
}

/**
 * Every upstream of the shard for its http listeners.
 *
 * @example
 * const ups = new HttpUpstreams(handlers, (u) => new Balancer(u, table));
 * ups.configure(config.upstreams);
 */
export class HttpUpstreams<O> {
  readonly #handlers: PoolHandlers<O>;
  readonly #makeBalancer: (u: ShardUpstream) => Balancer;
  #byName = new Map<string, HttpUpstream>();
  /** Pools by `upstream/address`: kept across reloads while the backend stays. */
  readonly #pools = new Map<string, UpstreamPool<O>>();

  constructor(handlers: PoolHandlers<O>, makeBalancer: (u: ShardUpstream) => Balancer) {
    this.#handlers = handlers;
    this.#makeBalancer = makeBalancer;
  }

  /** Applies a config snapshot's upstreams: new balancers; pools of removed backends close. */
  configure(upstreams: readonly ShardUpstream[]): void {
    const next = new Map<string, HttpUpstream>();
    const keep = new Set<string>();
    for (const u of upstreams) {
      const balancer = this.#makeBalancer(u);
      const poolCfg = u.pool ?? DEFAULT_POOL;
      for (const b of u.backends) keep.add(`${u.name}/${b.address}`);
      next.set(u.name, {
        config: u,
        balancer,
        pool: (b) => {
          const key = `${u.name}/${b.address}`;
          let p = this.#pools.get(key);
          if (p === undefined || p.closed) {
            p = new UpstreamPool<O>({
              host: b.host,
              port: b.port,
              maxConnections: poolCfg.maxConnections,
              maxIdle: poolCfg.maxIdle,
              idleTimeout: poolCfg.idleTimeoutMs,
              connectTimeout: u.connectTimeoutMs,
              handlers: this.#handlers,
            });
            this.#pools.set(key, p);
          }
          return p as UpstreamPool<unknown>;
        },
      });
    }
    this.#byName = next;
    for (const [key, p] of this.#pools) {
      if (keep.has(key)) continue;
      this.#pools.delete(key);
      void p.close();
    }
  }

  get(name: string): HttpUpstream | undefined {
    return this.#byName.get(name);
  }

  /** Pools open now, for views: `upstream/address` → busy, idle, queued. */
  describe(): Record<string, { busy: number; idle: number; queued: number }> {
    const out: Record<string, { busy: number; idle: number; queued: number }> = {};
    for (const [k, p] of this.#pools) out[k] = { busy: p.busy, idle: p.idle, queued: p.queued };
    return out;
  }

  /** Closes every pool: idle sockets now, busy ones when their requests end (or `destroy` for all now). */
  async close(destroy = false): Promise<void> {
    const pools = [...this.#pools.values()];
    this.#pools.clear();
    await Promise.all(pools.map((p) => (destroy ? p.destroy() : p.close())));
  }
}
