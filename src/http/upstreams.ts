/**
 * The upstream side of a shard's http listeners: per upstream a balancer (the L4 one, with the
 * health and breaker state every shard reads from the state table), and per backend a keep-alive
 * {@link UpstreamPool}. One per shard, shared by its http listeners; a reload keeps the pools of
 * backends that stay (their warm sockets too) and closes the others once their requests end.
 */
import { createHash } from 'node:crypto';
import type { Balancer } from '../workers/balancer.ts';
import type { ShardBackend, ShardUpstream } from '../workers/shard-config.ts';
import { UpstreamPool, type PoolHandlers } from './pool.ts';

/** What a pool is made with, and `id`, the same as a string, to compare across reloads. */
interface PoolSettings {
  pool: NonNullable<ShardUpstream['pool']>;
  connectTimeout: number;
  tls: ShardUpstream['tls'];
  id: string;
}

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
  /** The same, as the config snapshot in force wants them, for the backends it lists. */
  #want = new Map<string, PoolSettings>();

  constructor(handlers: PoolHandlers<O>, makeBalancer: (u: ShardUpstream) => Balancer) {
    this.#handlers = handlers;
    this.#makeBalancer = makeBalancer;
  }

  /** Applies a config snapshot's upstreams: new balancers; pools of removed backends close. */
  configure(upstreams: readonly ShardUpstream[]): void {
    const next = new Map<string, HttpUpstream>();
    const want = new Map<string, PoolSettings>();
    for (const u of upstreams) {
      const balancer = this.#makeBalancer(u);
      const pool = u.pool ?? DEFAULT_POOL;
      // TLS settings (and the certificates' contents) are part of a pool's identity: a reload
      // that changes them replaces the pool, as one that changes its limits does.
      const tlsId = u.tls ? createHash('sha256').update(JSON.stringify(u.tls)).digest('base64url').slice(0, 16) : 'plain';
      const settings: PoolSettings = { pool, connectTimeout: u.connectTimeoutMs, tls: u.tls, id: `${pool.maxConnections}/${pool.maxIdle}/${pool.idleTimeoutMs}/${u.connectTimeoutMs}/${tlsId}` };
      for (const b of u.backends) want.set(`${u.name}/${b.address}`, settings);
      // The pool last found for each backend of this snapshot: a request builds no key while it
      // is open (every pool taken out of #pools is closed).
      const found = new Map<object, UpstreamPool<O>>();
      next.set(u.name, {
        config: u,
        balancer,
        pool: (b) => {
          const hit = found.get(b);
          if (hit !== undefined && !hit.closed) return hit as UpstreamPool<unknown>;
          const key = `${u.name}/${b.address}`;
          let p = this.#pools.get(key);
          if (p === undefined || p.closed) {
            // The settings in force now: a request of an earlier snapshot (a retry just after a
            // reload) must not make the pool that new requests then share with its old settings.
            const w = this.#want.get(key) ?? settings;
            p = new UpstreamPool<O>({
              host: b.host,
              port: b.port,
              maxConnections: w.pool.maxConnections,
              maxIdle: w.pool.maxIdle,
              idleTimeout: w.pool.idleTimeoutMs,
              connectTimeout: w.connectTimeout,
              tls: w.tls,
              handlers: this.#handlers,
            });
            this.#pools.set(key, p);
            this.#made.set(key, w.id);
          }
          found.set(b, p);
          return p as UpstreamPool<unknown>;
        },
      });
    }
    this.#byName = next;
    this.#want = want;
    for (const [key, p] of this.#pools) {
      // A pool whose `pool` keys or connectTimeout changed is replaced too: kept, it went on with
      // the old limits (a reload raising maxConnections still answered 503 pool_exhausted). Its
      // requests in flight end on it; the next ones get a new pool with the new settings.
      if (want.get(key)?.id === this.#made.get(key)) continue;
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
