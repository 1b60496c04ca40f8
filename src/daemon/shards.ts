/**
 * The data plane as the daemon sees it: the `shards` subtree (one ShardActor per worker thread),
 * the thread host they run on, the state-table rows they are given, and the debug faults aimed at
 * them. Apart from the daemon (gatehouse.ts), which keeps the root tree, reload and the admin
 * backend, so that each reads on its own.
 */
import type { Logger } from 'pino';
import { supervisorChild, type ChildSpec, type Supervisor } from '../supervisors/supervisor.ts';
import { ShardActor, type ShardHost } from '../actors/shard.ts';
import { InThreadShardHost, PiscinaShardHost, reusePortSupported } from '../workers/pool.ts';
import { B, type StateTable, MAX_BACKENDS, MAX_LISTENERS, SlotAllocator } from '../workers/state-table.ts';
import type { ShardTls } from '../tls/listener-tls.ts';
import type { ShardUpstreamTls } from '../tls/upstream-tls.ts';
import { toShardConfig, type ShardConfig } from '../workers/shard-config.ts';
import type { FromShard } from '../workers/protocol.ts';
import type { RateAsk } from '../cluster/ratelimit-shard.ts';
import type { HubShards } from '../hub/hub-control.ts';
import type { HttpStatsSnapshot } from '../http/stats.ts';
import { HttpStatsAggregator } from './http-stats.ts';
import type { GatehouseConfig, ListenerConfig } from '../config/types.ts';

export interface ShardsOptions {
  table: StateTable;
  log: Logger;
  /** `runtime.workers` at start: 0 runs the one shard in the main thread. */
  workers: number;
  /** The `shards` supervisor is found under this root. */
  root: () => Supervisor;
  /** The running config (replaced by a reload). */
  config: () => GatehouseConfig;
  /** What a shard's config takes from the daemon rather than from the file. */
  runtime: () => Pick<ShardConfig, 'debug' | 'logLevel' | 'actorEvents'>;
  /** The TLS material of a listener with `tls` (certificates read by the main thread). */
  listenerTls?: (listener: string) => ShardTls | undefined;
  /** The TLS settings (files read) of an upstream with `tls`. */
  upstreamTls?: (upstream: string) => ShardUpstreamTls | undefined;
  /** Each hub listener's ready nodes, for a (re)started shard's init. */
  hubNodes: () => Record<string, string[]>;
  /** A shard bound its listeners. */
  onReady: (shard: ShardActor) => void;
  /** A message from the current incarnation of shard `shard`. */
  onMessage: (shard: number, m: FromShard) => void;
  /** Shard `shard` went down: no message of that incarnation comes after this. */
  onDown: (shard: number) => void;
  /** Cluster mode: a shard's rate-limit leases running low (`rl-ask`). */
  rateAsks?: (asks: RateAsk[]) => void;
}

/**
 * The `shards` subtree (one_for_one) with a `shard-N` per worker thread, the host that runs the
 * threads, and the state-table rows of listeners and backends. It builds each shard's config
 * (with the rows and the ports resolved so far), pushes it on reload, and logs each listener
 * address once, however many shards bind it.
 *
 * @example
 * const shards = new Shards({ table, log, workers: 2, root: () => root, config: () => current, ... });
 * rootChildren.push(shards.child());
 * await shards.pushConfig(); // after a reload
 */
export class Shards {
  /** Shards in the subtree: `runtime.workers`, or 1 in the main thread. */
  readonly count: number;
  // A removed listener's or backend's row is reused only once its connections are gone.
  readonly listenerSlots: SlotAllocator;
  readonly backendSlots: SlotAllocator;
  readonly #opts: ShardsOptions;
  readonly #host: ShardHost & { close(): Promise<void> };
  readonly #resolvedPorts = new Map<string, number>();
  /** Listener addresses already logged as ready (logged once per address, not per shard). */
  readonly #announced = new Map<string, string>();
  /** hub-deliver messages posted to each shard's current incarnation, on the scale of its HUB_DONE cell. */
  readonly #hubPosted: number[] = [];
  /** The shards' HTTP snapshots, summed so that counters survive a shard's restart. */
  readonly #httpStats = new HttpStatsAggregator();

  /** How the hub control plane reaches the shards. */
  readonly hubShards: HubShards = {
    post: (shard, m) => {
      const s = this.get(shard);
      if (!s || !s.post(m)) return false;
      if (m.type === 'hub-deliver') this.#hubPosted[shard] = (this.#hubPosted[shard] ?? 0) + 1;
      return true;
    },
    // hub-deliver messages a shard has not processed yet (node pacing).
    backlog: (shard) => (this.#hubPosted[shard] ?? 0) - this.#opts.table.hubDeliversDone(shard),
    // A draining shard still serves its clients: it still gets hub messages.
    running: () => this.list().flatMap((s) => (s.status === 'running' || s.status === 'stopping' ? [s.index] : [])),
  };

  constructor(opts: ShardsOptions) {
    this.#opts = opts;
    const table = opts.table;
    this.listenerSlots = new SlotAllocator(MAX_LISTENERS, (s) => table.resetListener(s), (s) => table.listenerActiveAll(s) === 0);
    this.backendSlots = new SlotAllocator(MAX_BACKENDS, (s) => table.resetBackend(s), (s) => table.backendGet(s, B.ACTIVE) === 0);
    let workers = opts.workers;
    if (workers > 0 && !reusePortSupported()) {
      opts.log.warn({ platform: process.platform }, 'SO_REUSEPORT is not available here: running the data plane in the main thread (workers: 0)');
      workers = 0;
    }
    this.count = Math.max(1, workers);
    this.#host = workers === 0 ? new InThreadShardHost(opts.log) : new PiscinaShardHost(workers, opts.log);
  }

  /** The state-table row of a backend (stable across reloads). */
  backendSlot(upstream: string, address: string): number {
    return this.backendSlots.get(`${upstream}/${address}`);
  }

  /** The `shards` subtree's child spec. */
  child(): ChildSpec {
    const { table, log } = this.#opts;
    const children: ChildSpec[] = [];
    for (let i = 0; i < this.count; i++) {
      children.push({
        id: `shard-${i}`,
        // A shard that drained and ended (POST /drain) stays down; a crashed one is restarted.
        restart: 'transient',
        // The shard drains for up to shutdownTimeout on its own; past that and a grace, the
        // supervisor aborts its task, which terminates the thread.
        shutdown: () => this.#opts.config().runtime.shutdownTimeout + 5_000,
        start: () => {
          // Hub messages of this incarnation only: none is taken after its DOWN (a dead shard's
          // clients are gone all at once, and a late hub-client-up must not bring one back).
          let alive = true;
          // What a dead incarnation never processed is gone with it: the backlog starts at zero.
          this.#hubPosted[i] = table.hubDeliversDone(i);
          const shard: ShardActor = new ShardActor({
            index: i,
            host: this.#host,
            table,
            log,
            init: () => ({
              shard: i,
              config: this.shardConfig(),
              buffers: table.buffers,
              reusePort: this.#host instanceof PiscinaShardHost,
              hubNodes: this.#opts.hubNodes(),
            }),
            listenerSlots: () => this.listenerSlots.used(),
            shutdownTimeoutMs: () => this.#opts.config().runtime.shutdownTimeout,
            onReady: (ls) => {
              this.#onReady(i, ls);
              this.#opts.onReady(shard);
            },
            onMessage: (m) => {
              if (!alive) return;
              if (m.type === 'rl-ask') this.#opts.rateAsks?.(m.asks);
              else this.#opts.onMessage(i, m);
            },
          });
          shard.monitor(() => {
            alive = false;
            // This incarnation's HTTP counts stay in the sums; the next one counts from zero.
            this.#httpStats.retire(i);
            this.#opts.onDown(i);
          });
          return shard.start();
        },
      });
    }
    return supervisorChild({ id: 'shards', strategy: 'one_for_one', maxRestarts: Math.max(5, 3 * this.count), periodMs: 30_000, children }, { log });
  }

  /** The shards running or starting now. */
  list(): ShardActor[] {
    const sup = this.#opts.root().child('shards') as Supervisor | undefined;
    return sup ? ([...sup.children()].filter((a) => a instanceof ShardActor) as ShardActor[]) : [];
  }

  /** Shard `index`, when it is running or starting now. */
  get(index: number): ShardActor | undefined {
    return this.list().find((s) => s.index === index);
  }

  /** A shard's config from the running one; rows of names no longer configured are retired. */
  shardConfig(): ShardConfig {
    const current = this.#opts.config();
    const cfg = toShardConfig(current, {
      listenerSlot: (n) => this.listenerSlots.get(n),
      backendSlot: (u, a) => this.backendSlot(u, a),
      resolvedPort: (n) => this.#resolvedPorts.get(n),
      listenerTls: (n) => this.#opts.listenerTls?.(n),
      upstreamTls: (n) => this.#opts.upstreamTls?.(n),
    });
    Object.assign(cfg, this.#opts.runtime());
    this.listenerSlots.retain(current.listeners.map((l) => l.name));
    this.backendSlots.retain(current.upstreams.flatMap((u) => u.backends.map((b) => `${u.name}/${b.address}`)));
    return cfg;
  }

  /** A new listener, or one whose address changed, binds afresh: a port 0 is resolved again. */
  rebindPorts(prev: readonly ListenerConfig[], next: readonly ListenerConfig[]): void {
    for (const l of next) {
      const old = prev.find((x) => x.name === l.name);
      if (!old || old.listen.address !== l.listen.address) this.#resolvedPorts.delete(l.name);
    }
  }

  /** Pushes the running config to every shard, shard 0 first so that a new port-0 listener gets one port for all. */
  async pushConfig(): Promise<void> {
    const [first, ...others] = this.list().sort((a, b) => a.index - b.index);
    if (first) this.#onReady(first.index, await first.request({ type: 'config', config: this.shardConfig() }));
    const shardCfg = this.shardConfig();
    await Promise.all(others.map(async (s) => this.#onReady(s.index, await s.request({ type: 'config', config: shardCfg }))));
  }

  #onReady(shard: number, listeners: { name: string; host: string; port: number }[]): void {
    for (const l of listeners) {
      const known = this.#announced.get(l.name);
      if (known === `${l.host}:${l.port}`) continue;
      const cfg = this.#opts.config().listeners.find((x) => x.name === l.name);
      if (cfg && cfg.listen.port === 0 && !this.#resolvedPorts.has(l.name)) {
        // Port 0: the first shard to bind picks the port, the others bind the same one.
        this.#resolvedPorts.set(l.name, l.port);
      }
      this.#announced.set(l.name, `${l.host}:${l.port}`);
      this.#opts.log.info({ listener: l.name, address: `${l.host}:${l.port}`, protocol: cfg?.protocol, shard }, 'listener ready');
    }
  }

  /**
   * The HTTP request metrics of every shard, summed: each live shard is asked for its snapshot
   * (`http-stats`), one that does not answer within a second counts with its last one, and what
   * ended shards had counted stays in (see `HttpStatsAggregator`). Never rejects.
   *
   * @example
   * const { routes, retries } = await shards.httpStats();
   */
  httpStats(): Promise<HttpStatsSnapshot> {
    return this.#httpStats.collect(this.list().map((s) => ({ index: s.index, request: () => s.request<unknown>({ type: 'http-stats' }) })));
  }

  /** Debug: crashes shard `index`'s thread; false when that shard is not running. */
  crash(index: number): boolean {
    return this.get(index)?.post({ type: 'crash' }) ?? false;
  }

  /** Debug: blocks shard `index`'s thread, for its watchdog to find. */
  hang(index: number): 'hung' | 'no_such_shard' | 'not_watched' {
    const s = this.get(index);
    if (!s) return 'no_such_shard';
    if (!s.watched) return 'not_watched';
    return s.post({ type: 'hang' }) ? 'hung' : 'no_such_shard';
  }

  /** Debug: crashes a hub client or a TCP connection; false when its shard is not running or it is gone. */
  async crashActor(id: string): Promise<boolean> {
    // Its id names its shard (`client:S.RANDOM`, `conn:S:SEQ`).
    const m = /^(?:client:(\d+)\.|conn:(\d+):)/.exec(id);
    const shard = m && this.get(Number(m[1] ?? m[2]));
    if (!shard) return false;
    return shard.request<boolean>({ type: 'crash-actor', actor: id }).catch(() => false);
  }

  /** Releases the threads; call it once the `shards` subtree has stopped. */
  close(): Promise<void> {
    return this.#host.close();
  }
}
