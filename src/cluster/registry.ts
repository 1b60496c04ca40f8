import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Subscription } from 'rxjs';
import { COMMAND_TIMEOUT_MS, type ClusterActor } from './cluster.ts';
import { registryCommands, type RegistryCommands } from './registry-scripts.ts';
import { RegistryDownError, RegistryFullError, SharedUnavailableError, type LocalChange, type RegistryEntry, type ServiceRegistry, type SharedRegistry } from '../registry/registry.ts';
import type { Registration, ServiceInstance } from '../registry/service.ts';

/** A change as published on the channel (see registry-scripts.ts). */
interface Message {
  v: number;
  type: 'registered' | 'updated' | 'heartbeat' | 'deregistered' | 'expired';
  id: string;
  entry: { e: number; s: number; t: number; r: Registration };
}

/** Most entries one expiry sweep takes (the next sweep takes the rest). */
const SWEEP_BATCH = 500;

const toEntry = (m: { e: number; s: number; r: Registration }): RegistryEntry => ({ registration: m.r, expiresAt: m.e, stamp: m.s });

/**
 * The service registry shared through Redis (cluster mode), for one instance. Redis holds the
 * truth (the scripts of registry-scripts.ts); this instance mirrors it into its local registry,
 * whose `service:ID` actors, events and discovery work as without a cluster.
 *
 * - Changes go through Redis while it is up and synced ({@link active}): a script changes the
 *   entry and publishes the change with a version; every instance applies the changes from the
 *   channel in version order, this one included (an operation answers once its own change is
 *   applied here). A gap in versions means missed messages: a full resync.
 * - Expiry: Redis's sorted set of expiry times. Every instance sweeps it (at the earliest expiry
 *   it knows of, and every `heartbeat`) with an atomic script, so exactly one instance expires an
 *   entry and publishes `expired`. The local actors' own timers are held back by a slack meanwhile.
 * - Resync, on start and whenever the cluster's state goes `up`: push the changes made locally
 *   while Redis was away (all local entries if Redis lost its data: a new `services:epoch`),
 *   merged by stamp (the later registration wins; a deregistration removes only an entry
 *   registered before it); sweep; read a snapshot and apply it (what this instance has that
 *   Redis has not is removed here).
 * - While Redis is away the registry works for this instance alone, its own timers expire
 *   entries, and the changes are remembered for the next resync.
 *
 * @example
 * new ClusterRegistry({ cluster, registry, log }).start(); // stops with the cluster actor
 */
export class ClusterRegistry implements SharedRegistry {
  readonly #cluster: ClusterActor;
  readonly #registry: ServiceRegistry;
  readonly #log: Logger;
  readonly #cmd: RegistryCommands;
  readonly #keys: string[];
  readonly #epochKey: string;
  readonly #channel: string;
  /** Ids changed here while not shared (to push), with the time of a deletion. */
  readonly #dirty = new Map<string, 'put' | 'heartbeat' | number>();
  /** Version of the last change applied here; undefined until the first resync. */
  #version: number | undefined;
  #epoch: string | undefined;
  #synced = false;
  #resyncing = false;
  /** Messages received during a resync, applied after it. */
  #buffer: Message[] = [];
  /** Everything that changes the local registry runs here, in order. */
  #chain: Promise<unknown> = Promise.resolve();
  readonly #waiters = new Set<{ v: number; done: () => void }>();
  #tick: NodeJS.Timeout | undefined;
  #sweepTimer: NodeJS.Timeout | undefined;
  #sweepAt = Infinity;
  #state: Subscription | undefined;
  #stopped = false;
  readonly #onMessage = (channel: string, text: string): void => {
    if (channel === this.#channel) this.#received(text);
  };
  readonly #onSubReady = (): void => this.#subscribe();
  /** Redis's version at the last tick while this copy was behind it (see {@link #checkVersion}). */
  #behind: number | undefined;

  constructor(opts: { cluster: ClusterActor; registry: ServiceRegistry; log: Logger }) {
    this.#cluster = opts.cluster;
    this.#registry = opts.registry;
    this.#log = opts.log.child({ actorId: 'registry', actorType: 'cluster-registry' });
    this.#cmd = registryCommands(opts.cluster.redis);
    const k = (n: string): string => opts.cluster.key(n);
    this.#keys = [k('services'), k('services:expiry'), k('services:version'), k('services:changes'), k('services:gone')];
    this.#epochKey = k('services:epoch');
    this.#channel = k('services:changes');
  }

  /** Operations go through Redis now (up and synced). */
  get active(): boolean {
    return this.#synced && this.#cluster.up && !this.#stopped;
  }

  /** Attaches to the registry and the cluster actor; detaches when the cluster actor ends. */
  start(): this {
    this.#registry.share(this);
    this.#cluster.sub.on('message', this.#onMessage);
    this.#cluster.sub.on('ready', this.#onSubReady);
    this.#subscribe();
    this.#state = this.#cluster.state$.subscribe((s) => {
      if (s === 'up') this.#resync();
      else {
        this.#synced = false;
        this.#registry.setExpirySlack(0);
      }
    });
    const every = this.#cluster.config.heartbeat;
    this.#tick = setInterval(() => this.#onTick(), every);
    this.#tick.unref();
    this.#cluster.monitor(() => this.stop());
    return this;
  }

  /** Detaches: the registry is local again. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#registry.share(undefined);
    this.#registry.setExpirySlack(0);
    this.#state?.unsubscribe();
    this.#cluster.sub.off('message', this.#onMessage);
    this.#cluster.sub.off('ready', this.#onSubReady);
    clearInterval(this.#tick);
    clearTimeout(this.#sweepTimer);
    for (const w of this.#waiters) w.done();
    this.#waiters.clear();
  }

  async register(registration: Registration): Promise<{ created: boolean; service: ServiceInstance }> {
    const [created, v] = await this.#call(() => this.#cmd.ghRegPut(this.#keys, registration.id, JSON.stringify(registration), registration.ttl, this.#max()));
    if (created === -1) throw new RegistryFullError(this.#max());
    await this.#applied(v);
    const service = this.#registry.get(registration.id);
    if (!service) throw new SharedUnavailableError(new Error('the registration was not applied here'));
    return { created: created === 1, service };
  }

  async heartbeat(id: string): Promise<ServiceInstance | undefined> {
    const [found, v] = await this.#call(() => this.#cmd.ghRegHeartbeat(this.#keys, id));
    if (found === 0) return undefined;
    await this.#applied(v);
    return this.#registry.get(id);
  }

  async deregister(id: string): Promise<boolean> {
    const [found, v] = await this.#call(() => this.#cmd.ghRegDelete(this.#keys, id));
    if (found === 0) return false;
    await this.#applied(v);
    return true;
  }

  /** A change made here alone: remembered for the next resync. */
  local(change: LocalChange): void {
    if (this.#stopped) return;
    if (change.kind === 'expired') {
      // Expired here: nothing to push (Redis expires its own copy, unless heartbeats elsewhere kept it).
      if (this.#dirty.get(change.id) !== undefined && typeof this.#dirty.get(change.id) !== 'number') this.#dirty.delete(change.id);
    } else if (change.kind === 'delete') this.#dirty.set(change.id, change.at);
    else if (change.kind === 'put' || this.#dirty.get(change.id) !== 'put') this.#dirty.set(change.id, change.kind);
    // A failed shared call while Redis looked up: resync at once rather than at the next `up`.
    if (change.kind !== 'expired' && this.#cluster.up) void this.#resync();
  }

  /** The registry (re)started (empty): mirror Redis into it. */
  resume(): void {
    if (this.#cluster.up && !this.#stopped) void this.#resync();
  }

  #max(): number {
    return this.#registry.maxInstances;
  }

  async #call<T>(op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      // Refused for memory: the cluster goes `full` at once, so the next calls are local without trying.
      this.#cluster.noteError(err);
      throw new SharedUnavailableError(err);
    }
  }

  /** Resolves once the change of version `v` is applied here (or after a resync, if it never comes). */
  async #applied(v: number): Promise<void> {
    if (this.#version !== undefined && this.#version >= v) return;
    let timer: NodeJS.Timeout | undefined;
    const arrived = await new Promise<boolean>((resolve) => {
      const w = { v, done: () => resolve(true) };
      this.#waiters.add(w);
      timer = setTimeout(() => {
        this.#waiters.delete(w);
        resolve(false);
      }, COMMAND_TIMEOUT_MS);
    });
    clearTimeout(timer);
    if (!arrived && !this.#stopped) await this.#resync();
  }

  #received(text: string): void {
    let m: Message;
    try {
      m = JSON.parse(text) as Message;
    } catch {
      this.#log.warn('service registry: an unreadable change on the channel, ignored');
      return;
    }
    if (this.#resyncing || this.#version === undefined) {
      // Bounded: past it, the gap is seen at the next change and resynced.
      if (this.#buffer.length < 10_000) this.#buffer.push(m);
      return;
    }
    this.#enqueue(() => this.#apply(m));
  }

  #enqueue(work: () => Promise<void>): Promise<void> {
    const p = this.#chain.then(work);
    this.#chain = p.catch((err: unknown) => {
      // Not applied: this instance's copy may differ; the next resync (resume, heartbeat) repairs it.
      this.#synced = false;
      if (!(err instanceof RegistryDownError)) this.#log.error({ err }, 'service registry: applying a shared change failed; resyncing');
    });
    return p;
  }

  async #apply(m: Message): Promise<void> {
    if (this.#version === undefined || m.v <= this.#version) return;
    if (m.v > this.#version + 1) {
      this.#log.warn({ have: this.#version, got: m.v }, 'service registry: missed shared changes; resyncing');
      this.#resync();
      return;
    }
    this.#version = m.v;
    const entry = toEntry(m.entry);
    if (m.type === 'deregistered' || m.type === 'expired') await this.#registry.applyRemove(m.id, m.type);
    else await this.#registry.applyPut(entry, { heartbeat: m.type === 'heartbeat' });
    if (entry.expiresAt > 0 && m.type !== 'deregistered' && m.type !== 'expired') this.#scheduleSweep(entry.expiresAt);
    this.#release();
  }

  /** Wakes the operations waiting for a version applied now. */
  #release(): void {
    for (const w of this.#waiters) {
      if (this.#version !== undefined && w.v <= this.#version) {
        this.#waiters.delete(w);
        w.done();
      }
    }
  }

  /** Queues a resync (one at a time; one queued while one runs is enough). */
  #resync(): Promise<void> {
    if (this.#resyncing) return this.#chain.then(() => {});
    this.#resyncing = true;
    return this.#enqueue(async () => {
      try {
        await this.#doResync();
      } catch (err) {
        this.#synced = false;
        this.#cluster.noteError(err);
        this.#log.warn({ err: (err as Error).message }, 'service registry: resync with Redis failed; retrying at the next heartbeat');
      } finally {
        this.#resyncing = false;
      }
      const buffered = this.#buffer;
      this.#buffer = [];
      for (const m of buffered.sort((a, b) => a.v - b.v)) await this.#apply(m);
    });
  }

  async #doResync(): Promise<void> {
    if (this.#stopped || !this.#cluster.up) return;
    const redis = this.#cluster.redis;
    const candidate = randomUUID();
    const [, [, epoch]] = ((await redis.multi().set(this.#epochKey, candidate, 'NX').get(this.#epochKey).exec()) ?? []) as [unknown, [unknown, string]];
    const fresh = epoch !== this.#epoch;
    // Push: the changes made here meanwhile; everything here when Redis lost its data.
    const here = new Map(this.#registry.entries().map((e) => [e.registration.id, e]));
    const ids = new Set(this.#dirty.keys());
    if (fresh) for (const id of here.keys()) ids.add(id);
    let pushed = 0;
    for (const id of ids) {
      const mark = this.#dirty.get(id);
      const local = here.get(id);
      if (typeof mark === 'number') {
        pushed += (await this.#cmd.ghRegMerge(this.#keys, 'delete', id, '', 0, mark, 0)) > 0 ? 1 : 0;
      } else if (local) {
        const kind = mark === 'heartbeat' && !fresh ? 'heartbeat' : 'put';
        const r = local.registration;
        pushed += (await this.#cmd.ghRegMerge(this.#keys, kind, id, JSON.stringify(r), r.ttl, local.stamp, local.expiresAt)) > 0 ? 1 : 0;
      }
      this.#dirty.delete(id);
    }
    await this.#cmd.ghRegExpire(this.#keys, SWEEP_BATCH);
    const res = (await redis.multi().get(this.#keys[2]!).hgetall(this.#keys[0]!).exec()) ?? [];
    const version = Number(res[0]?.[1] ?? 0);
    const all = (res[1]?.[1] ?? {}) as Record<string, string>;
    const now = Date.now();
    const seen = new Set<string>();
    for (const [id, text] of Object.entries(all)) {
      const entry = toEntry(JSON.parse(text) as Message['entry']);
      // Past its expiry: the next sweep expires it; a mirror now would only come and go.
      if (entry.expiresAt > 0 && entry.expiresAt <= now) continue;
      seen.add(id);
      await this.#registry.applyPut(entry, { quiet: true });
      if (entry.expiresAt > 0) this.#scheduleSweep(entry.expiresAt);
    }
    let removed = 0;
    for (const e of this.#registry.entries()) {
      if (seen.has(e.registration.id)) continue;
      const gone = e.expiresAt > 0 && e.expiresAt <= Date.now() ? 'expired' : 'deregistered';
      if (await this.#registry.applyRemove(e.registration.id, gone)) removed++;
    }
    this.#version = version;
    this.#epoch = epoch;
    this.#synced = true;
    this.#release();
    this.#registry.setExpirySlack(this.#cluster.config.heartbeat + COMMAND_TIMEOUT_MS);
    this.#log.info({ services: seen.size, pushed, removed, version, newStore: fresh }, 'service registry: synced with Redis');
  }

  /** Sweeps at `at` unless a sweep comes earlier already. */
  #scheduleSweep(at: number): void {
    if (at >= this.#sweepAt || this.#stopped) return;
    clearTimeout(this.#sweepTimer);
    this.#sweepAt = at;
    this.#sweepTimer = setTimeout(() => {
      this.#sweepAt = Infinity;
      void this.#sweep();
    }, Math.max(0, at - Date.now()) + 5);
    this.#sweepTimer.unref();
  }

  async #sweep(): Promise<void> {
    if (!this.active) return;
    try {
      const n = await this.#cmd.ghRegExpire(this.#keys, SWEEP_BATCH);
      if (n === SWEEP_BATCH) this.#scheduleSweep(Date.now());
    } catch {
      return; // Redis away: the next up resyncs, the local timers meanwhile
    }
    // The next earliest expiry this instance knows of.
    // (Past ones are expired already, their messages on the way; the heartbeat tick sweeps too.)
    const now = Date.now();
    let next = Infinity;
    for (const e of this.#registry.entries()) if (e.expiresAt > now && e.expiresAt < next) next = e.expiresAt;
    if (next < Infinity) this.#scheduleSweep(next);
  }

  /**
   * Subscribes to the change channel, only on a ready subscriber connection and again at every
   * `ready` (a reconnect). A SUBSCRIBE that ioredis writes while the connection is still in its
   * handshake puts it in subscriber mode before ioredis's ready check, which Redis then refuses:
   * the connection is dropped and that subscription is not restored (the hub's cluster link
   * subscribes the same way). Changes published while unsubscribed are caught by the resync that
   * follows, and by {@link #checkVersion} if a subscription is ever lost without a reconnect.
   */
  #subscribe(): void {
    const sub = this.#cluster.sub;
    if (sub.status !== 'ready' || this.#stopped) return;
    sub.subscribe(this.#channel).then(
      () => {
        if (this.#cluster.up && !this.#stopped) void this.#resync();
      },
      () => {}, // the connection went away: the next `ready` subscribes again
    );
  }

  #onTick(): void {
    if (!this.#cluster.up || this.#stopped) return;
    if (!this.#synced || this.#dirty.size > 0) void this.#resync();
    else {
      void this.#sweep();
      void this.#checkVersion();
    }
  }

  /**
   * The safety net under pub/sub (at most once): Redis's change counter against this copy's. A
   * copy still behind a version that Redis had one heartbeat earlier has lost changes (a change
   * on its way is applied well within a heartbeat), and resyncs.
   */
  async #checkVersion(): Promise<void> {
    let v: number;
    try {
      v = Number((await this.#cluster.redis.get(this.#keys[2]!)) ?? 0);
    } catch {
      return; // Redis away: the next up resyncs
    }
    const have = this.#version ?? -1;
    if (have >= v) {
      this.#behind = undefined;
      return;
    }
    if (this.#behind !== undefined && have < this.#behind) {
      this.#behind = undefined;
      this.#log.warn({ have, redis: v }, 'service registry: shared changes did not arrive; resyncing');
      void this.#resync();
      return;
    }
    this.#behind = v;
  }
}
