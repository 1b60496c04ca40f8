import os from 'node:os';
import { Subject, Observable, merge, map, filter } from 'rxjs';
import type { Logger } from 'pino';
import { Supervisor, type ChildSpec } from '../supervisors/supervisor.ts';
import { live } from '../runtime/live.ts';
import { MachineActor } from '../runtime/machine-actor.ts';
import { actorEvents$, setActorEventsEnabled, type ActorEvent } from '../runtime/events.ts';
import type { TreeNode, TreeOptions } from '../runtime/actor.ts';
import { ADMIN, B, StateTable } from '../workers/state-table.ts';
import type { FromShard } from '../workers/protocol.ts';
import { toGatewayEvent, type ActorDefinition, type GatewayEvent } from '../actors/custom.ts';
import { CustomActors } from './custom-actors.ts';
import { hubCounters, listenerCounters, mergedTree, upstreamsView } from './views.ts';
import { stateView, type StateView } from '../admin/state-view.ts';
import { AdminActor } from '../actors/admin.ts';
import { Upstreams } from './upstreams.ts';
import { Hubs } from './hubs.ts';
import { TlsManager } from '../tls/manager.ts';
import { Shards } from './shards.ts';
import { ServiceRegistry } from '../registry/registry.ts';
import { registryRoutes } from '../registry/routes.ts';
import { discoveryChanged, resolveDiscovery } from '../registry/discovery.ts';
import { ConfigWatcher } from '../config/watch-config.ts';
import { ClusterActor, type ClusterView } from '../cluster/cluster.ts';
import { ClusterRegistry } from '../cluster/registry.ts';
import { ClusterRateLimits } from '../cluster/ratelimit.ts';
import { PresenceActor } from '../actors/presence.ts';
import { HUB_FROM_SHARD_TYPES, type HubFromShard } from '../hub/messages.ts';
import { diffConfig, loadConfigFile, redactConfig } from '../config/load.ts';
import { ConfigError, InjectedFaultError, errorChain, formatConfigIssue } from '../errors.ts';
import type { ActorConfig, GatehouseConfig } from '../config/types.ts';
import type { AdminBackend, DaemonInfo, HubStats, HubView, ListenerCounters, ReloadResult, UpstreamsView } from '../admin/types.ts';
import type { HttpStatsSnapshot } from '../http/stats.ts';

export interface GatehouseOptions {
  config: GatehouseConfig;
  /** The file the config came from: `reload()` reads it again. */
  configFile?: string;
  log: Logger;
  /** `--debug`: actor events, fault injection. Also `runtime.debug`. */
  debug?: boolean;
  /**
   * Cuts the start short (a SIGTERM during start-up): what has started is stopped in order, as
   * by `stop()`, and `start` resolves with the stopped daemon.
   */
  signal?: AbortSignal;
}

/**
 * The running daemon: the root supervisor and its subtrees (admin, custom actors, data-plane
 * shards), the shared state table, reload and drain. It is the admin server's backend.
 *
 * Tree: `root` (one_for_one) -> `admin`, `actors` (custom actors), `upstreams` (a supervisor per
 * upstream with a health probe and a circuit breaker per backend), `hubs` (a supervisor per hub
 * listener with its node streams, presence and pending requests), `shards` (one ShardActor per
 * worker thread). Children start in that order and stop in reverse: shards drain first, the
 * admin server answers (`/readyz` 503) until the end.
 *
 * @example
 * const gh = await Gatehouse.start({ config, configFile, log });
 * await gh.stop(); // drain, then stop everything
 */
export class Gatehouse implements AdminBackend {
  /** The running config (replaced by a successful reload): the file's, with `discovery` resolved. */
  current: GatehouseConfig;
  /** The running config as the file gave it (discovery unresolved). */
  #base: GatehouseConfig;
  /** The service registry (`/v1/services`); upstreams and hub listeners with `discovery` follow it. */
  readonly registry: ServiceRegistry;
  /** Reloads and discovery changes apply one at a time. */
  #applying: Promise<unknown> = Promise.resolve();
  #discoveryQueued = false;
  /** Cluster mode's link to Redis (`cluster` in the config), in the tree before the registry. */
  #cluster: ClusterActor | undefined;
  /** Cluster mode's shared rate limits (leases from Redis), with the cluster actor. */
  #rateLimits: ClusterRateLimits | undefined;
  /** `runtime.watchConfig`: the config file's watcher, while it is on. */
  #configWatcher: ConfigWatcher | undefined;
  readonly log: Logger;
  debug: boolean;
  readonly #debugFlag: boolean;
  readonly table = StateTable.create();
  readonly root: Supervisor;
  readonly actorEvents$: Observable<ActorEvent & { shard?: number }>;
  readonly #configFile: string | undefined;
  readonly #shardEvents = new Subject<ActorEvent & { shard?: number }>();
  #eventListeners = 0;
  #draining = false;
  /** `POST /undrain` is binding the listeners again: shards get `paused: false`. */
  #undraining = false;
  #stopping: Promise<void> | undefined;
  #reloading: Promise<ReloadResult> | undefined;
  readonly events$: Observable<GatewayEvent>;
  readonly #gatewayEvents = new Subject<GatewayEvent>();
  readonly #actors: CustomActors;
  readonly #upstreams: Upstreams;
  readonly #hubs: Hubs;
  readonly #shards: Shards;
  /** Certificates of the TLS listeners: read, watched, handed to the shards. */
  readonly #tls: TlsManager;

  private constructor(opts: GatehouseOptions, customs: { cfg: ActorConfig; def: ActorDefinition }[]) {
    this.log = opts.log;
    this.registry = new ServiceRegistry({ log: this.log });
    this.#base = opts.config;
    // The registry starts empty: discovered backends and nodes arrive as instances register.
    this.current = resolveDiscovery(opts.config, () => []);
    this.table.logTo(this.log);
    this.#debugFlag = Boolean(opts.debug);
    this.debug = Boolean(opts.debug || opts.config.runtime.debug);
    this.#configFile = opts.configFile;
    // A renewed certificate reaches the shards as part of their config (new handshakes use it).
    this.#tls = new TlsManager(this.log, () => void this.#shards.pushConfig().catch((err: unknown) => this.log.error({ err }, 'pushing renewed certificates to the shards failed')));
    this.#shards = new Shards({
      listenerTls: (name) => this.#tls.shardTls(name),
      upstreamTls: (name) => this.#tls.upstreamTls(name),
      table: this.table,
      log: this.log,
      workers: opts.config.runtime.workers,
      root: () => this.root,
      config: () => this.current,
      runtime: () => ({ debug: this.debug, logLevel: this.#logLevel(this.current), actorEvents: this.#eventListeners > 0, paused: this.#draining && !this.#undraining && !this.#stopping }),
      hubNodes: () => Object.fromEntries(this.#hubs.controls().map((c) => [c.name, c.readyNodes()])),
      onReady: (shard) => this.#hubs.shardReady((m) => shard.post(m)),
      onMessage: (shard, m) => this.#onShardMessage(shard, m),
      onDown: (shard) => this.#hubs.shardDown(shard),
      rateAsks: (asks) => this.#rateLimits?.ask(asks),
    });
    this.actorEvents$ = merge(actorEvents$, this.#shardEvents);
    this.events$ = this.#makeEvents$();
    this.#actors = new CustomActors(() => this.root, this.events$, this.log);
    this.#upstreams = new Upstreams({ table: this.table, slotOf: (u, a) => this.#shards.backendSlot(u, a), log: this.log });
    this.#hubs = new Hubs({
      log: this.log,
      gateId: () => this.current.cluster?.instanceId ?? os.hostname(),
      shards: this.#shards.hubShards,
      // Cluster mode: hub delivery, presence and the per-user cap across instances.
      ...(opts.config.cluster && { cluster: () => this.cluster$ }),
    });
    this.root = new Supervisor(
      {
        id: 'root',
        strategy: 'one_for_one',
        maxRestarts: 3,
        periodMs: 10_000,
        // Probes and breakers start before the shards, so that traffic finds them; shards stop first.
        children: [
          this.#adminChild(),
          this.#actors.child(customs),
          ...(opts.config.cluster ? [this.#clusterChild(opts.config.cluster)] : []),
          this.registry.child(),
          this.#upstreams.child(this.current.upstreams),
          // Hub node streams, presence and pending requests: up before the shards, down after them.
          this.#hubs.child(this.current.listeners),
          this.#shards.child(),
        ],
      },
      { log: this.log },
    );
  }

  /**
   * Starts the whole tree. Rejects (and leaves nothing running) when any part fails to start.
   * When `opts.signal` aborts meanwhile, resolves once what had started has stopped (`stopped`).
   */
  static async start(opts: GatehouseOptions): Promise<Gatehouse> {
    // Modules load before anything starts: a missing module fails the start cleanly.
    const customs = await CustomActors.load(opts.config.actors);
    const gh = new Gatehouse(opts, customs);
    if (gh.debug) setActorEventsEnabled(true);
    // The root supervisor finishes the child it is starting, starts no other, and stops the
    // started ones in reverse order: a stop during start-up keeps the drain-first order.
    const onAbort = (): void => void gh.stop().catch((err: unknown) => gh.log.error({ err }, 'shutdown failed'));
    if (opts.signal?.aborted) onAbort();
    else opts.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      gh.#tls.apply(opts.config);
      await gh.root.start();
    } catch (err) {
      if (gh.#stopping) {
        // A start that failed because the stop got there first is not a failed start.
        gh.log.warn({ err }, 'start-up cut short by a stop');
        await gh.#stopping.catch(() => {});
        return gh;
      }
      await gh.root.shutdown('infinity').catch(() => {});
      await gh.#shards.close();
      gh.#tls.close();
      throw err;
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
    if (gh.#stopping) {
      await gh.#stopping.catch(() => {});
      return gh;
    }
    gh.registry.changes$.subscribe(() => gh.#discoveryChanged());
    gh.#watchConfig();
    gh.root.monitor((down) => {
      if (!gh.#stopping) gh.log.fatal({ reason: down.reason, err: down.error }, 'root supervisor gave up');
    });
    gh.log.info({ shards: gh.#shards.count, listeners: gh.current.listeners.length, debug: gh.debug }, 'gatehouse started');
    return gh;
  }

  // --- the tree ---------------------------------------------------------------------------

  #adminChild(): ChildSpec {
    return {
      id: 'admin',
      restart: 'permanent',
      shutdown: 5_000,
      start: () => new AdminActor({ backend: this, log: this.log, config: () => this.current.admin, routes: registryRoutes(this.registry) }).start(),
    };
  }

  /** The `cluster` actor: restarted by root if it fails; a changed `cluster` key needs a restart. */
  #clusterChild(config: NonNullable<GatehouseConfig['cluster']>): ChildSpec {
    return {
      id: 'cluster',
      restart: 'permanent',
      shutdown: 2_000,
      start: ({ parent }) => {
        this.#cluster = new ClusterActor({ config, log: this.log, parent });
        this.#rateLimits = new ClusterRateLimits({ cluster: this.#cluster, table: this.table, log: this.log });
        this.#cluster.start();
        // The service registry shared through Redis while this cluster actor runs (src/cluster/registry.ts).
        new ClusterRegistry({ cluster: this.#cluster, registry: this.registry, log: this.log }).start();
        return this.#cluster;
      },
    };
  }

  /** The cluster actor while cluster mode is on and it runs. */
  get cluster$(): ClusterActor | undefined {
    return this.#cluster?.status === 'running' ? this.#cluster : undefined;
  }

  #onShardMessage(shard: number, m: FromShard): void {
    if (m.type === 'restart') {
      const admin = this.root.child('admin') as AdminActor | undefined;
      admin?.recordRestart(m.supervisor);
    } else if (m.type === 'actor-event') {
      this.#shardEvents.next({ ...m.event, shard });
    } else if (m.type === 'backend') {
      this.#upstreams.report(m.slot, { type: m.event });
    } else if (HUB_FROM_SHARD_TYPES.has(m.type)) {
      this.#hubs.fromShard(shard, m as HubFromShard);
    }
  }

  /** Gateway events for custom actors: forwarding from shards is on while anyone listens. */
  #makeEvents$(): Observable<GatewayEvent> {
    const fromActors = this.actorEvents$.pipe(
      map(toGatewayEvent),
      filter((e): e is GatewayEvent => e !== undefined),
    );
    const source = merge(fromActors, this.#gatewayEvents);
    return new Observable<GatewayEvent>((sub) => {
      if (this.#eventListeners++ === 0) this.#setEvents(true);
      const s = source.subscribe(sub);
      return () => {
        s.unsubscribe();
        if (--this.#eventListeners === 0) this.#setEvents(false);
      };
    });
  }

  #setDebug(on: boolean): void {
    if (on === this.debug) return;
    this.debug = on;
    this.#setEvents(this.#eventListeners > 0);
  }

  #setEvents(on: boolean): void {
    const enabled = on || this.debug;
    setActorEventsEnabled(enabled);
    for (const s of this.#shards.list()) s.post({ type: 'events', enabled });
  }

  // --- AdminBackend ---------------------------------------------------------------------

  ready(): boolean {
    if (this.#draining || this.root.status !== 'running') return false;
    const shards = this.#shards.list();
    return shards.length === this.#shards.count && shards.every((s) => s.status === 'running');
  }

  readyDetail(): Record<string, unknown> {
    return {
      draining: this.#draining,
      shards: this.#shards.list().map((s) => ({ shard: s.index, state: s.state })),
      expectedShards: this.#shards.count,
    };
  }

  async tree(opts: TreeOptions): Promise<TreeNode> {
    return mergedTree(this.root, this.#shards.list(), opts);
  }

  async actorCounts(): Promise<Record<string, number>> {
    const total: Record<string, number> = { ...live.countsByType() };
    const remote = await Promise.all(this.#shards.list().map((s) => s.request<Record<string, number>>({ type: 'counts' }).catch(() => ({}))));
    for (const r of remote) for (const [k, v] of Object.entries(r)) total[k] = (total[k] ?? 0) + v;
    return total;
  }

  listenerCounters(): ListenerCounters[] {
    return listenerCounters(this.table, this.#shards.listenerSlots.entries(), this.#shards.count);
  }

  shardsUp(): { shard: number; up: boolean }[] {
    return Array.from({ length: this.#shards.count }, (_, shard) => ({ shard, up: this.table.shardUp(shard) }));
  }

  /** `GET /state`: the table's live counts per listener and backend (all zero when idle). */
  stateView(): StateView {
    const { listenerSlots: l, backendSlots: b } = this.#shards;
    return stateView({ table: this.table, shardCount: this.#shards.count, listeners: l.entries(), listenerRows: l.used(), backends: b.entries(), backendRows: b.used() });
  }

  upstreams(): UpstreamsView {
    return upstreamsView(this.current, this.table, (u, a) => this.#shards.backendSlot(u, a));
  }

  backendAdmin(upstream: string, address: string, action: { state: 'drain' | 'disable' | 'enable' } | { weight: number }): UpstreamsView['upstreams'][number]['backends'][number] | undefined {
    const u = this.current.upstreams.find((x) => x.name === upstream);
    if (!u || !u.backends.some((b) => b.address === address)) return undefined;
    const slot = this.#shards.backendSlot(upstream, address);
    if ('weight' in action) this.table.backendSet(slot, B.WEIGHT, action.weight + 1);
    else this.table.backendSet(slot, B.ADMIN, action.state === 'drain' ? ADMIN.DRAIN : action.state === 'disable' ? ADMIN.MAINT : ADMIN.READY);
    this.log.info({ upstream, backend: address, ...action }, 'backend admin state changed');
    return this.upstreams().upstreams.find((x) => x.name === upstream)!.backends.find((b) => b.address === address);
  }

  hubStats(): HubStats {
    const hubNames = new Set(this.current.listeners.filter((l) => l.protocol === 'hub').map((l) => l.name));
    const fromShards = hubCounters(this.table, this.#shards.listenerSlots.entries().flatMap(([name, slot]) => (hubNames.has(name) ? [slot] : [])));
    const dropped = { ...fromShards.dropped };
    for (const [reason, n] of Object.entries(this.#hubs.dropped())) dropped[reason] = (dropped[reason] ?? 0) + n;
    return { ...this.#hubs.stats(), messages: fromShards.messages, dropped };
  }

  tlsStats(): TlsManager['stats'] {
    return this.#tls.stats;
  }

  httpStats(): Promise<HttpStatsSnapshot> {
    return this.#shards.httpStats();
  }

  hubView(): HubView {
    return { listeners: this.#hubs.view() };
  }

  cluster(): ClusterView | undefined {
    if (!this.current.cluster) return undefined;
    return this.#cluster?.view() ?? { redis: 'down', instanceId: this.current.cluster.instanceId, keyPrefix: this.current.cluster.keyPrefix, instances: [] };
  }

  /** The effective config, secrets redacted (`GET /config`). */
  config(): unknown {
    return redactConfig(this.#base);
  }

  crashShard(index: number): boolean {
    return this.debug && this.#shards.crash(index);
  }

  hangShard(index: number): 'hung' | 'no_such_shard' | 'not_watched' {
    return this.debug ? this.#shards.hang(index) : 'no_such_shard';
  }

  async crashActor(id: string): Promise<boolean> {
    if (!this.debug) return false;
    const a = live.list().find((x) => x.id === id);
    if (a instanceof MachineActor) return a.crash();
    if (a instanceof PresenceActor) return a.crash(new InjectedFaultError(id));
    return this.#shards.crashActor(id);
  }

  /**
   * `POST /drain`: every listener on every shard stops accepting, `/readyz` answers 503, open
   * connections go on (HTTP keep-alive ones close after their current response). The shards
   * stay up: `POST /undrain` takes it back, SIGTERM finishes it.
   */
  drain(): void {
    if (this.#draining) return;
    this.#draining = true;
    this.log.info('draining: listeners paused, open connections go on');
    void this.#serial(() => this.#shards.pushConfig()).catch((err: unknown) => this.log.error({ err }, 'pausing the listeners failed'));
  }

  /**
   * `POST /undrain`: ends a `POST /drain`. Resolves once every shard accepts again (then
   * `/readyz` is 200 again); false when there was no drain to end, or the daemon is stopping.
   */
  async undrain(): Promise<boolean> {
    if (!this.#draining || this.#stopping) return false;
    this.#undraining = true;
    try {
      await this.#serial(() => this.#shards.pushConfig());
    } finally {
      this.#undraining = false;
    }
    if (this.#stopping) return false;
    this.#draining = false;
    this.log.info('undrained: listeners accept again');
    return true;
  }

  /** Every shard stops accepting and drains to its end (the daemon is stopping). */
  #drainShards(): void {
    this.#draining = true;
    this.log.info({ timeoutMs: this.current.runtime.shutdownTimeout }, 'draining');
    for (const s of this.#shards.list()) s.post({ type: 'drain', timeoutMs: this.current.runtime.shutdownTimeout });
  }

  get draining(): boolean {
    return this.#draining;
  }

  /** Re-reads the config file; a bad config never replaces the running one. */
  reload(): Promise<ReloadResult> {
    this.#reloading ??= this.#serial(() => this.#reload()).finally(() => (this.#reloading = undefined));
    return this.#reloading;
  }

  #serial<T>(work: () => Promise<T>): Promise<T> {
    const p = this.#applying.then(work);
    this.#applying = p.catch(() => {});
    return p;
  }

  /** The registry changed: apply the discovered backends and nodes (bursts coalesce into one apply). */
  #discoveryChanged(): void {
    if (this.#discoveryQueued || this.#stopping) return;
    this.#discoveryQueued = true;
    void this.#serial(async () => {
      this.#discoveryQueued = false;
      if (this.#stopping) return;
      const prev = this.current;
      const next = resolveDiscovery(this.#base, (service) => this.registry.list(service));
      if (!discoveryChanged(prev, next)) return;
      this.current = next;
      // Probes of new backends start (unhealthy until their first pass) before shards see them.
      await this.#upstreams.apply(prev.upstreams, next.upstreams);
      await this.#hubs.apply(prev.listeners, next.listeners);
      await this.#shards.pushConfig();
      this.#hubs.announce();
      const backends = (c: GatehouseConfig) => c.upstreams.filter((u) => u.discovery).map((u) => `${u.name}: ${u.backends.map((b) => b.address).join(' ')}`);
      const nodes = (c: GatehouseConfig) => c.listeners.flatMap((l) => (l.protocol === 'hub' && l.discovery ? [`${l.name}: ${(l.nodes ?? []).map((n) => n.id).join(' ')}`] : []));
      this.log.info({ upstreams: backends(next), hubs: nodes(next) }, 'discovery applied');
    }).catch((err: unknown) => this.log.error({ err }, 'applying a service registry change failed; the next change tries again'));
  }

  /** `GET /info`: the config file, shards and configured listeners (the debug UI's header). */
  info(): DaemonInfo {
    const listeners = this.current.listeners.map((l) => ({ name: l.name, protocol: l.protocol, listen: l.listen.address }));
    return { ...(this.#configFile !== undefined && { configFile: this.#configFile }), shards: this.#shards.count, listeners };
  }

  async #reload(): Promise<ReloadResult> {
    if (!this.#configFile) return { ok: false, errors: ['no config file to reload from'] };
    let next: GatehouseConfig;
    try {
      next = await loadConfigFile(this.#configFile);
    } catch (err) {
      const errors = err instanceof ConfigError ? err.issues.map(formatConfigIssue) : [String((err as Error).message)];
      this.log.error({ errors }, 'reload refused: the running config stays');
      return { ok: false, errors };
    }
    const prev = this.current;
    const prevBase = this.#base;
    const diff = diffConfig(prevBase, next);
    const restartRequired = [
      ...(next.runtime.workers !== prev.runtime.workers ? ['runtime.workers'] : []),
      ...(next.admin.listen.address !== prev.admin.listen.address ? ['admin.listen'] : []),
      ...(JSON.stringify(next.cluster) !== JSON.stringify(prev.cluster) ? ['cluster'] : []),
    ];
    // What cannot change without a restart keeps its running value: /config shows what is in effect.
    next = { ...next, runtime: { ...next.runtime, workers: prev.runtime.workers }, admin: { ...next.admin, listen: prev.admin.listen }, cluster: prev.cluster };
    this.#base = next;
    next = resolveDiscovery(next, (service) => this.registry.list(service));
    try {
      await this.#apply(prev, next);
    } catch (err) {
      this.log.error({ err }, 'reload failed while applying: rolled back, the running config stays');
      this.#base = prevBase;
      await this.#rollback(prev, next).catch((e: unknown) => this.log.error({ err: e }, 'rollback failed'));
      return { ok: false, errors: [errorChain(err)] };
    }
    this.#watchConfig();
    if (restartRequired.length > 0) this.log.warn({ keys: restartRequired }, 'these changes apply on restart only');
    this.log.info({ ...diff, restartRequired }, 'config reloaded');
    this.#gatewayEvents.next({ type: 'config.reloaded', ...diff });
    return { ok: true, ...diff, restartRequired };
  }

  /**
   * Applies a validated config. Custom actors first (the step most likely to fail: a module that
   * does not load, options its logic rejects), then the shards, shard 0 first so that a new port-0
   * listener gets one port for all. Throws on the first failure; the caller rolls back.
   */
  async #apply(prev: GatehouseConfig, next: GatehouseConfig): Promise<void> {
    const commitActors = await this.#actors.apply(prev.actors, next.actors);
    this.#shards.rebindPorts(prev.listeners, next.listeners);
    this.current = next;
    this.#setDebug(this.#debugFlag || next.runtime.debug);
    this.log.level = this.#logLevel(next);
    // Probes and breakers of removed backends stop before the shards let go of their table rows.
    await this.#upstreams.apply(prev.upstreams, next.upstreams);
    // Hub control planes exist before shards bind a new hub listener; shards learn the ready nodes after.
    await this.#hubs.apply(prev.listeners, next.listeners);
    // Certificate files are read again: a reload picks up renewed ones even without a change event.
    this.#tls.apply(next);
    await this.#shards.pushConfig();
    this.#hubs.announce();
    commitActors();
  }

  /** Starts or stops the config file's watcher as `runtime.watchConfig` says. */
  #watchConfig(): void {
    const file = this.#configFile;
    const on = this.current.runtime.watchConfig && file !== undefined && !this.#stopping;
    if (!on) {
      this.#configWatcher?.close();
      this.#configWatcher = undefined;
      return;
    }
    if (this.#configWatcher) return;
    this.#configWatcher = new ConfigWatcher({
      file,
      onChange: () => {
        this.log.info({ file }, 'config file changed: reloading');
        void this.reload();
      },
      onError: (err) => this.log.warn({ file, code: err.code, err: err.message }, 'config file cannot be read: the running config stays'),
    });
    this.log.info({ file }, 'watching the config file');
  }

  /** `--debug` lowers an `info` level to `debug`, in the main thread and the shards alike. */
  #logLevel(cfg: GatehouseConfig): string {
    return this.#debugFlag && cfg.log.level === 'info' ? 'debug' : cfg.log.level;
  }

  /**
   * Puts the previous config back after a failed apply. Every actor whose entry differs between
   * the two configs is stopped, and those of the previous config are started again; then the
   * previous shard config is pushed.
   */
  async #rollback(prev: GatehouseConfig, failed: GatehouseConfig): Promise<void> {
    this.current = prev;
    this.#setDebug(this.#debugFlag || prev.runtime.debug);
    this.log.level = this.#logLevel(prev);
    await this.#actors.rollback(prev.actors, failed.actors);
    await this.#upstreams.apply(failed.upstreams, prev.upstreams);
    await this.#hubs.apply(failed.listeners, prev.listeners);
    try {
      this.#tls.apply(prev);
    } catch (err) {
      this.log.error({ err }, 'rollback: the previous certificates could not be read again; the last loaded stay in use');
    }
    await this.#shards.pushConfig();
    this.#hubs.announce();
  }

  /** Drains and stops everything, in reverse start order. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      this.#configWatcher?.close();
      this.#configWatcher = undefined;
      this.#drainShards();
      await this.root.shutdown('infinity');
      await this.#shards.close();
      this.#tls.close();
      this.registry.close();
      this.#shardEvents.complete();
      this.#gatewayEvents.complete();
      setActorEventsEnabled(false);
      this.log.info('gatehouse stopped');
    })();
    return this.#stopping;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop().catch(() => {});
  }
}
