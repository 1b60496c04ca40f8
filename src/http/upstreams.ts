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
  /** Pools by `upstream/address`: kept across reloads while the backend stays with the same pool keys. */
  readonly #pools = new Map<string, UpstreamPool<O>>();
  /** The pool keys and connectTimeout each pool of {@link #pools} was made with, by the same key. */
  readonly #made = new Map<string, string>();

  constructor(handlers: PoolHandlers<O>, makeBalancer: (u: ShardUpstream) => Balancer) {
    this.#handlers = handlers;
    this.#makeBalancer = makeBalancer;
  }

  /** Applies a config snapshot's upstreams: new balancers; pools of removed backends close. */
  configure(upstreams: readonly ShardUpstream[]): void {
    const next = new Map<string, HttpUpstream>();
    /** Key → the settings its pool must have. */
    const keep = new Map<string, string>();
    for (const u of upstreams) {
      const balancer = this.#makeBalancer(u);
      const poolCfg = u.pool ?? DEFAULT_POOL;
      const settings = `${poolCfg.maxConnections}/${poolCfg.maxIdle}/${poolCfg.idleTimeoutMs}/${u.connectTimeoutMs}`;
      for (const b of u.backends) keep.set(`${u.name}/${b.address}`, settings);
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
            this.#made.set(key, settings);
          }
          return p as UpstreamPool<unknown>;
        },
      });
    }
    this.#byName = next;
    for (const [key, p] of this.#pools) {
      // A pool whose `pool` keys or connectTimeout changed is replaced too: kept, it went on with
      // the old limits (a reload raising maxConnections still answered 503 pool_exhausted). Its
      // requests in flight end on it; the next ones get a new pool with the new settings.
      if (keep.get(key) === this.#made.get(key)) continue;
      this.#pools.delete(key);
      this.#made.delete(key);
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
    this.#made.clear();
    await Promise.all(pools.map((p) => (destroy ? p.destroy() : p.close())));
  }
}
