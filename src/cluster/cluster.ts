import { Redis, type RedisOptions } from 'ioredis';
import { BehaviorSubject, type Observable } from 'rxjs';
import type { Logger } from 'pino';
import { Actor } from '../runtime/actor.ts';
import type { ClusterConfig } from '../config/types.ts';
import { parseRedisUrl, redactRedisUrl } from '../config/redis-url.ts';

/**
 * Whether this instance shares state through Redis now: `up`; `down` (unreachable, or slower than
 * {@link COMMAND_TIMEOUT_MS}); `full` (reachable, but refusing writes: `maxmemory` reached with
 * `noeviction`). Everything shared works on local state unless `up`.
 */
export type RedisState = 'up' | 'down' | 'full';

/** One gateway instance as `GET /cluster` shows it. */
export interface ClusterInstance {
  instanceId: string;
  /** ISO time of its last heartbeat. */
  lastHeartbeat: string;
  self: boolean;
}

/**
 * The rate-limit leases of this instance (src/cluster/ratelimit.ts), counted since the daemon
 * started (a restart of the `cluster` actor keeps them).
 */
export interface LeaseStats {
  /** Limits are decided from leases now (false: every limit on its local bucket). */
  shared: boolean;
  /** Asks for a lease that Redis answered with at least one token. */
  granted: number;
  /** Asks that Redis answered with none (the shared bucket is empty). */
  denied: number;
  /** Asks sent that got no answer (Redis away, slow or refusing: each limit then local). */
  error: number;
  /** Tokens granted. */
  tokens: number;
  /** Pipelines sent to Redis (the asks of one event-loop turn go in one). */
  roundTrips: number;
  /** Their time summed, answered or failed (s). */
  roundTripSeconds: number;
}

/** `GET /cluster`. */
export interface ClusterView {
  redis: RedisState;
  instanceId: string;
  keyPrefix: string;
  instances: ClusterInstance[];
  /** Present once the rate-limit lease path is attached. */
  leases?: LeaseStats;
}

/** How long a command may take before it counts as failed (a slow Redis is a down Redis). */
export const COMMAND_TIMEOUT_MS = 1_000;

/**
 * Redis refused a write because it is out of memory (`OOM command not allowed when used memory >
 * 'maxmemory'`): as a reply, a script's error, or a transaction aborted for it (EXECABORT).
 *
 * @example
 * try { await redis.set(k, v); } catch (err) { if (isRedisFull(err)) cluster.noteError(err); }
 */
export function isRedisFull(err: unknown, seen = new Set<object>()): boolean {
  const e = err as { message?: unknown; previousErrors?: unknown } | null;
  if (!e || typeof e !== 'object' || seen.has(e)) return false;
  if (typeof e.message === 'string' && e.message.startsWith('OOM ')) return true;
  // ioredis can list an error among its own previousErrors (a transaction cut by a closed
  // connection): without `seen` that recursed until the stack overflowed, an unhandled
  // rejection that ended the daemon.
  seen.add(e);
  return Array.isArray(e.previousErrors) && e.previousErrors.some((p) => isRedisFull(p, seen));
}

/**
 * ioredis options for a `cluster.redis` URL: one server (the URL), or a master through Redis
 * Sentinel (`sentinels` and `name`: ioredis asks the sentinels for the master on every connect,
 * checks the role, and reconnects when the sentinels announce a failover).
 */
export function redisConnection(url: string, base: RedisOptions): { url?: string; options: RedisOptions } {
  const t = parseRedisUrl(url);
  if (t.kind === 'server') return { url: t.url, options: base };
  return {
    options: {
      ...base,
      sentinels: t.sentinels,
      name: t.name,
      db: t.db,
      ...(t.username !== undefined && { username: t.username }),
      ...(t.password !== undefined && { password: t.password }),
      ...(t.sentinelUsername !== undefined && { sentinelUsername: t.sentinelUsername }),
      ...(t.sentinelPassword !== undefined && { sentinelPassword: t.sentinelPassword }),
      // All sentinels unreachable: ask them again, backing off as the connection does.
      sentinelRetryStrategy: base.retryStrategy ?? undefined,
      sentinelCommandTimeout: COMMAND_TIMEOUT_MS,
      // Subscribes to +switch-master on the sentinels: a failover drops the connections at once.
      failoverDetector: true,
      // A master demoted under us answers writes with READONLY: reconnect (and ask the sentinels).
      reconnectOnError: (err) => (err.message.startsWith('READONLY') ? 1 : false),
    },
  };
}

function newRedis(url: string, options: RedisOptions): Redis {
  const c = redisConnection(url, options);
  return c.url === undefined ? new Redis(c.options) : new Redis(c.url, c.options);
}

/**
 * Cluster mode's link to Redis, on the main thread: the `cluster` actor. It owns two ioredis
 * connections (commands, and one in subscriber mode for pub/sub and sharded pub/sub), both to
 * one server or both to the master that Redis Sentinel names ({@link redisConnection}),
 * heartbeats this instance every `heartbeat` (a sorted set of instances by last heartbeat; an
 * instance silent for `deadAfter` is dead), and publishes the Redis state: `up` after a heartbeat went through, `down` when the
 * connection dropped or a heartbeat failed or took longer than {@link COMMAND_TIMEOUT_MS}, `full`
 * when Redis refused the heartbeat's write for memory (or another part {@link noteError}s such a
 * refusal). The heartbeat is a write, so it is also what sees Redis take writes again. The
 * state is logged once per change; everything that shares state through Redis watches
 * {@link state$} and falls back to local state unless it is `up` (`down` or `full`),
 * resynchronising when it is `up` again. Commands never queue while Redis is away: they fail at once and the caller keeps
 * its local decision.
 *
 * Keys and channels all start with `keyPrefix` ({@link key}).
 *
 * @example
 * const c = new ClusterActor({ config, log }).start();
 * c.state$.subscribe((s) => s === 'up' && resync());
 * await c.redis.incr(c.key('x'));
 */
export class ClusterActor extends Actor {
  readonly config: ClusterConfig;
  /** Commands (rejected at once while disconnected). */
  readonly redis: Redis;
  /** Subscriber-mode connection (SUBSCRIBE / SSUBSCRIBE); subscriptions are restored on reconnect by ioredis. */
  readonly sub: Redis;
  readonly #log: Logger;
  readonly #state = new BehaviorSubject<RedisState>('down');
  /** `up` / `down` / `full` as it changes (starts `down` until the first heartbeat went through). */
  readonly state$: Observable<RedisState> = this.#state.asObservable();
  #timer: NodeJS.Timeout | undefined;
  #instances: ClusterInstance[] = [];
  #beating = false;
  #lastLogged: RedisState | undefined;

  constructor(opts: { config: ClusterConfig; log: Logger; parent?: Actor }) {
    super('cluster', 'cluster', opts.parent);
    this.config = opts.config;
    this.#log = opts.log.child({ actorId: this.id, actorType: this.type });
    const base: RedisOptions = {
      // No queue while disconnected: a command fails at once, the caller decides locally.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: COMMAND_TIMEOUT_MS,
      connectTimeout: 2_000,
      // Reconnect for ever, backing off to 2 s.
      retryStrategy: (times) => Math.min(2_000, 50 * 2 ** Math.min(times, 6)),
      lazyConnect: true,
    };
    this.redis = newRedis(opts.config.redis, { ...base, connectionName: `gatehouse:${opts.config.instanceId}` });
    this.sub = newRedis(opts.config.redis, { ...base, connectionName: `gatehouse:${opts.config.instanceId}:sub`, enableOfflineQueue: true });
    for (const c of [this.redis, this.sub]) {
      // ioredis emits 'error' on every failed (re)connect; the state change is logged once instead.
      c.on('error', () => {});
      c.on('close', () => this.#set('down', 'connection closed'));
    }
    this.redis.on('ready', () => void this.#heartbeat());
  }

  get state(): string {
    return this.status === 'running' ? this.#state.value : this.status;
  }

  /** Redis reachable and taking writes now: state is shared. */
  get up(): boolean {
    return this.#state.value === 'up';
  }

  /**
   * A command of another part failed: when Redis refused it for memory, the instance goes `full`
   * at once (every shared part on local state) rather than at the next heartbeat. Other errors are
   * left to the heartbeat to judge.
   */
  noteError(err: unknown): void {
    if (this.status === 'running' && this.#state.value === 'up' && isRedisFull(err)) this.#set('full', (err as Error).message);
  }

  /** The rate-limit lease counters, shown in {@link view} (set by src/cluster/ratelimit.ts). */
  leaseStats: LeaseStats | undefined;

  /** A key or channel name under the configured prefix. */
  key(name: string): string {
    return `${this.config.keyPrefix}${name}`;
  }

  override describe(): Record<string, unknown> {
    return { redis: this.#state.value, instanceId: this.config.instanceId, instances: this.#instances.length };
  }

  /** Connects in the background: a Redis that is down at start leaves the instance serving on local state. */
  start(): this {
    this.markRunning();
    void this.redis.connect().catch(() => this.#set('down', 'cannot connect'));
    void this.sub.connect().catch(() => {});
    this.#timer = setInterval(() => void this.#heartbeat(), this.config.heartbeat);
    this.#timer.unref();
    return this;
  }

  /** The live instances as last read (this one included while Redis is up). */
  view(): ClusterView {
    const { instanceId, keyPrefix } = this.config;
    const instances = this.up ? this.#instances : [{ instanceId, lastHeartbeat: new Date().toISOString(), self: true }];
    const leases = this.leaseStats && { ...this.leaseStats };
    return { redis: this.#state.value, instanceId, keyPrefix, instances, ...(leases && { leases }) };
  }

  /** Ids of the instances alive at the last heartbeat (for cleaning up after dead ones). */
  liveInstanceIds(): string[] {
    return this.#instances.map((i) => i.instanceId);
  }

  async #heartbeat(): Promise<void> {
    if (this.#beating || this.status !== 'running') return;
    this.#beating = true;
    const now = Date.now();
    const set = this.key('instances');
    try {
      const res = await this.redis
        .multi()
        .zadd(set, now, this.config.instanceId)
        .zremrangebyscore(set, '-inf', now - this.config.deadAfter)
        .zrange(set, 0, -1, 'WITHSCORES')
        .exec();
      const flat = (res?.[2]?.[1] ?? []) as string[];
      const out: ClusterInstance[] = [];
      for (let i = 0; i + 1 < flat.length; i += 2) {
        out.push({ instanceId: flat[i]!, lastHeartbeat: new Date(Number(flat[i + 1])).toISOString(), self: flat[i] === this.config.instanceId });
      }
      this.#instances = out;
      this.#set('up');
    } catch (err) {
      // A Redis out of memory refuses the ZADD (and so the whole MULTI) but is there: `full`.
      this.#set(isRedisFull(err) ? 'full' : 'down', (err as Error).message);
    } finally {
      this.#beating = false;
    }
  }

  #set(next: RedisState, reason?: string): void {
    if (this.status === 'exited') return;
    if (this.#state.value !== next) this.#state.next(next);
    if (this.#lastLogged === next) return;
    // The first `down` before any `up` is logged too: a Redis down at start is worth a line.
    this.#lastLogged = next;
    if (next === 'up') this.#log.info({ redis: redactUrl(this.config.redis), instanceId: this.config.instanceId }, 'cluster: redis up');
    else if (next === 'full') this.#log.warn({ redis: redactUrl(this.config.redis), reason }, 'cluster: redis full (writes refused), serving with local state');
    else this.#log.warn({ redis: redactUrl(this.config.redis), reason }, 'cluster: redis down, serving with local state');
  }

  protected requestStop(): boolean {
    clearInterval(this.#timer);
    void (async () => {
      // Leave the instance set at once (others would wait deadAfter otherwise); best effort.
      if (this.#state.value !== 'down') await this.redis.zrem(this.key('instances'), this.config.instanceId).catch(() => {});
      this.redis.disconnect();
      this.sub.disconnect();
      this.#state.complete();
      this.exit('shutdown');
    })();
    return true;
  }

  protected forceStop(): void {
    clearInterval(this.#timer);
    this.redis.disconnect();
    this.sub.disconnect();
    this.#state.complete();
  }
}

/** A Redis URL (`redis://`, `rediss://`, `redis+sentinel://`) without its passwords, for logs. */
export function redactUrl(url: string): string {
  return redactRedisUrl(url);
}
