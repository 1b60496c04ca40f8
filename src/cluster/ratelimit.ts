/**
 * Cluster mode's rate limits, main-thread side: takes leases of tokens from the buckets that the
 * instances share in Redis and writes them into the state table, where the shards spend them
 * (src/cluster/ratelimit-shard.ts, src/workers/state/lease.ts). See docs/cluster.md, "Rate
 * limits", for the design and its bound. Its asks, grants, denials, failures and round trips are
 * counted ({@link LeaseStats}, per state table so that they outlive a restart of the cluster
 * actor) and exported as `gatehouse_cluster_lease_*` (src/admin/metrics.ts).
 */
import type { Logger } from 'pino';
import type { Subscription } from 'rxjs';
import type { StateTable } from '../workers/state-table.ts';
import type { ClusterActor, LeaseStats } from './cluster.ts';
import type { RateAsk } from './ratelimit-shard.ts';

/**
 * GCRA in Redis (as redis-cell does it), granting up to `want` tokens at once. KEYS[1]: the
 * bucket, holding its theoretical arrival time (µs, Redis's clock). ARGV: interval (µs, may be
 * fractional), burst × interval (µs), want, lease. Returns { granted, µs until a whole lease is
 * due again when fewer than `want` were granted, else 0 }: an instance that met an empty bucket
 * asks again only then, so that a drained bucket costs Redis about one ask per lease, not one per
 * token. The key expires once the bucket is full again.
 */
const LEASE_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local lease = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local g = math.floor((now + burst - tat) / interval)
if g > want then g = want end
if g < 0 then g = 0 end
if g > 0 then
  tat = tat + g * interval
  redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
local wait = 0
if g < want then
  wait = math.ceil(tat + lease * interval - burst - now)
  if wait < 1 then wait = 1 end
end
return { g, wait }
`;

/** The script's name on the cluster's command connection. */
const COMMAND = 'gatehouseRateLease';

/** Leased tokens left unspent this long (at least) expire: a quiet instance cannot hoard the bucket. */
export const MIN_LEASE_TTL_MS = 100;
/** After a failed batch, leases are tried again this often while the cluster says Redis is up. */
const RETRY_MS = 1_000;
/** The table's lease clock is ticked this often while leases are on (its resolution). */
export const CLOCK_TICK_MS = 5;

/** The lease counters of a daemon, by its state table: they outlive a restart of the `cluster` actor. */
const statsByTable = new WeakMap<StateTable, LeaseStats>();

function statsFor(table: StateTable): LeaseStats {
  let s = statsByTable.get(table);
  if (!s) statsByTable.set(table, (s = { shared: false, granted: 0, denied: 0, error: 0, tokens: 0, roundTrips: 0, roundTripSeconds: 0 }));
  return s;
}

type LeaseRedis = { [COMMAND]: (key: string, intervalUs: string, burstUs: string, want: number, lease: number) => unknown };

/**
 * The main thread's half of cluster rate limits, one per cluster actor. It turns the table's
 * lease mode on while Redis is up and off (every limit on its local bucket, logged once) while it
 * is down or a batch failed, and answers the shards' asks: each event-loop turn's asks go to
 * Redis as one pipeline of the lease script, and each answer is written into its lease.
 *
 * @example
 * const limits = new ClusterRateLimits({ cluster, table, log });
 * shardMessages.on('rl-ask', (m) => limits.ask(m.asks));
 */
export class ClusterRateLimits {
  readonly #cluster: ClusterActor;
  readonly #table: StateTable;
  readonly #log: Logger;
  readonly #sub: Subscription;
  readonly #stats: LeaseStats;
  /** Asks of this turn by lease cell (one ask per bucket is in flight: its WANT). */
  #queued = new Map<number, RateAsk>();
  #scheduled = false;
  #on = false;
  #wasOn = false;
  #retry: NodeJS.Timeout | undefined;
  #clock: NodeJS.Timeout | undefined;

  constructor(opts: { cluster: ClusterActor; table: StateTable; log: Logger }) {
    this.#cluster = opts.cluster;
    this.#table = opts.table;
    this.#log = opts.log.child({ actorId: opts.cluster.id, actorType: opts.cluster.type, part: 'ratelimit' });
    this.#cluster.redis.defineCommand(COMMAND, { numberOfKeys: 1, lua: LEASE_LUA });
    this.#stats = statsFor(opts.table);
    this.#stats.shared = false;
    this.#cluster.leaseStats = this.#stats;
    this.#sub = this.#cluster.state$.subscribe({
      next: (s) => this.#set(s === 'up', `redis ${s}`),
      complete: () => this.close(),
    });
  }

  /** Leases in use now (Redis up and answering). */
  get on(): boolean {
    return this.#on;
  }

  /** Asks from a shard (`rl-ask`): sent with the others of this event-loop turn, or dropped while leases are off. */
  ask(asks: RateAsk[]): void {
    if (!this.#on) {
      for (const a of asks) this.#table.leaseCancel(a.cell);
      return;
    }
    for (const a of asks) this.#queued.set(a.cell, a);
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => void this.#flush());
  }

  /** Leases off for good (the cluster actor stopped): every limit on its local bucket. */
  close(): void {
    this.#sub?.unsubscribe();
    this.#stats.shared = false;
    clearTimeout(this.#retry);
    clearInterval(this.#clock);
    this.#on = false;
    this.#table.setLeaseMode(false);
    for (const a of this.#queued.values()) this.#table.leaseCancel(a.cell);
    this.#queued.clear();
  }

  async #flush(): Promise<void> {
    this.#scheduled = false;
    const batch = [...this.#queued.values()];
    this.#queued.clear();
    if (batch.length === 0) return;
    if (!this.#on) return this.#cancel(batch);
    const p = this.#cluster.redis.pipeline() as unknown as LeaseRedis & { exec(): Promise<[Error | null, unknown][] | null> };
    for (const a of batch) {
      // Enough to pay back any credit taken and hold a whole lease again.
      const want = Math.max(1, a.lease - this.#table.leaseAvailable(a.cell));
      p[COMMAND](this.#cluster.key(`rl:${a.bucket}`), String(a.intervalNs / 1000), String((a.intervalNs * a.burst) / 1000), want, a.lease);
    }
    let res: [Error | null, unknown][] | null;
    const t0 = performance.now();
    this.#stats.roundTrips++;
    try {
      res = await p.exec();
    } catch (err) {
      return this.#failed(batch, err as Error);
    } finally {
      this.#stats.roundTripSeconds += (performance.now() - t0) / 1000;
    }
    const firstErr = res?.find(([e]) => e !== null)?.[0];
    if (!res || firstErr) return this.#failed(batch, firstErr ?? new Error('no reply'));
    for (let i = 0; i < batch.length; i++) this.#grant(batch[i]!, res[i]![1] as [number, number]);
  }

  #grant(a: RateAsk, [granted, waitUs]: [number, number]): void {
    if (granted > 0) {
      this.#stats.granted++;
      this.#stats.tokens += granted;
    } else this.#stats.denied++;
    // A route key's entry taken over by another key meanwhile: its lease is that key's now.
    if (a.entry !== undefined && this.#table.routeEntryKey(a.entry.index) !== a.entry.key) return;
    const ttlMs = Math.max(MIN_LEASE_TTL_MS, Math.ceil((a.intervalNs * a.lease) / 1e6));
    this.#table.leaseGrant(a.cell, granted, waitUs > 0 ? Math.ceil(waitUs / 1000) : 0, ttlMs);
  }

  #cancel(batch: RateAsk[]): void {
    for (const a of batch) this.#table.leaseCancel(a.cell);
  }

  #failed(batch: RateAsk[], err: Error): void {
    this.#stats.error += batch.length;
    this.#cancel(batch);
    this.#set(false, err.message);
    // Redis out of memory: the cluster goes `full` now (every shared part local), not at the next heartbeat.
    this.#cluster.noteError(err);
    // The cluster may still say up (a slow Redis, a failed script): try leases again later.
    clearTimeout(this.#retry);
    this.#retry = setTimeout(() => this.#set(this.#cluster.up, 'redis down'), RETRY_MS).unref();
  }

  #set(on: boolean, reason: string): void {
    if (on === this.#on) return;
    this.#on = on;
    this.#stats.shared = on;
    clearInterval(this.#clock);
    if (on) {
      // The clock runs before the shards spend anything.
      this.#table.tickLeaseClock();
      this.#clock = setInterval(() => this.#table.tickLeaseClock(), CLOCK_TICK_MS).unref();
    }
    this.#table.setLeaseMode(on);
    if (on) {
      this.#wasOn = true;
      this.#log.info('cluster: rate limits shared through redis');
    } else if (this.#wasOn) {
      for (const a of this.#queued.values()) this.#table.leaseCancel(a.cell);
      this.#queued.clear();
      this.#log.warn({ reason }, 'cluster: rate limits on local buckets until redis is back (each instance applies the whole limit)');
    }
  }
}
