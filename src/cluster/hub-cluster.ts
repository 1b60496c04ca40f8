import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Subscription } from 'rxjs';
import { Actor, type ExitReason } from '../runtime/actor.ts';
import type { HubTarget } from '../hub/messages.ts';
import type { HistoryPosition } from '../hub/frames.ts';
import type { ClusterActor, RedisState } from './cluster.ts';
import { decodeHubWire, encodeDeliver, hubKeys, type HubKeys } from './hub-wire.ts';
import { hubPipeline, type HubPipeline } from './hub-scripts.ts';
import { RemotePresence } from './hub-presence.ts';
import { HubCaps } from './hub-caps.ts';

/** `{"type":"resume-failed"}`: the client cannot get what it missed, and starts afresh. */
export function resumeFailedFrame(epoch: string, offset: number): string {
  return JSON.stringify({ type: 'resume-failed', epoch, offset });
}

export interface HubClusterOptions {
  /** `hub-cluster:LISTENER`. */
  id: string;
  listener: string;
  parent?: Actor;
  log: Logger;
  /** The cluster actor while it runs (a restarted one is bound again). */
  cluster: () => ClusterActor | undefined;
  /** The users online on this instance now (local presence: clients, or in their grace); undefined while presence restarts. */
  localUsers: () => Iterable<string> | undefined;
  /** `maxClientsPerUser`, read at each admission. */
  maxClientsPerUser: () => number;
  /** A push or broadcast published by another instance: to this instance's clients. */
  deliver: (to: HubTarget, frame: string) => void;
  /** A user's cluster-wide presence may have changed (another instance gained or lost it). */
  presenceChanged: (userId: string) => void;
}

/**
 * The hub listener's link to the other instances (`hub-cluster:LISTENER`, type `hub-cluster`, in
 * `hub:LISTENER` after presence), over the cluster actor's Redis connections:
 *
 * - **Delivery**: a node's push or broadcast that reached this instance is published once on the
 *   listener's channel (SPUBLISH/SSUBSCRIBE on Redis >= 7, PUBLISH/SUBSCRIBE before); every other
 *   instance hands it to its own shards ({@link HubClusterOptions.deliver}).
 * - **Presence**: this instance's users are a Redis set with a TTL of `deadAfter` (refreshed each
 *   `heartbeat`), changed by Lua scripts that publish each change with a sequence number; the
 *   other instances' sets are mirrored in a {@link RemotePresence}. A dead instance's set is
 *   dropped once it left the instance list; a stopping one deletes it and says `gone`.
 * - **Per-user cap**: {@link HubCaps}, one Lua check-and-count per admission, batched per tick.
 *
 * Redis down: delivery and presence stay local, admissions use the local cap; one log line per
 * change. Redis up again: this instance writes its whole presence set and cap share again
 * (`reset`), and reads the others'.
 *
 * @example
 * const hc = new HubClusterActor({ id: 'hub-cluster:hub', listener: 'hub', cluster, localUsers, maxClientsPerUser, deliver, presenceChanged, log }).start();
 * hc.publish({ kind: 'all' }, frame); // true: handed to Redis
 */
export class HubClusterActor extends Actor {
  readonly listener: string;
  readonly remote: RemotePresence;
  readonly caps: HubCaps;
  readonly #opts: HubClusterOptions;
  readonly #log: Logger;
  #bound: ClusterActor | undefined;
  #keys: HubKeys | undefined;
  #instance = '';
  #stateSub: Subscription | undefined;
  #subscribed = false;
  /** SSUBSCRIBE works (Redis >= 7): SPUBLISH; otherwise PUBLISH. */
  #sharded = true;
  /** This instance's presence set and cap share are in Redis (false after any failure: written again). */
  #synced = false;
  #syncing = false;
  #linkUp = false;
  /** When Redis was last seen coming up: instances are not declared dead for `deadAfter` after (their heartbeats may lag the outage). */
  #upAt = 0;
  #timer: NodeJS.Timeout | undefined;
  #pipe: HubPipeline | undefined;
  readonly #onMessage = (channel: string, message: string): void => this.#message(channel, message);
  /** The subscriber connection is (again) ready: subscribe on it (see {@link #subscribe}). */
  readonly #onSubReady = (): void => {
    const c = this.#bound;
    this.#subscribed = false;
    if (c && c.up && this.#keys) this.#subscribe(c);
  };

  constructor(opts: HubClusterOptions) {
    super(opts.id, 'hub-cluster', opts.parent);
    this.#opts = opts;
    this.listener = opts.listener;
    this.#log = opts.log;
    this.remote = new RemotePresence({ fetch: (i) => this.#fetch(i), changed: opts.presenceChanged });
    this.caps = new HubCaps({ admit: (u) => this.#admit(u), add: (u, d) => this.#capsAdd(u, d) });
  }

  get state(): string {
    if (this.status !== 'running') return this.status;
    return this.#linkUp ? (this.#synced ? 'linked' : 'syncing') : 'local';
  }

  override describe(): Record<string, unknown> {
    return { ...this.remote.sizes(), ...this.caps.sizes(), sharded: this.#sharded };
  }

  start(): this {
    this.markRunning();
    const every = this.#opts.cluster()?.config.heartbeat ?? 1_000;
    this.#timer = setInterval(() => this.#tick(), every);
    this.#tick();
    return this;
  }

  /** Redis is reachable and this instance's presence is there: cross-instance delivery is on. */
  get linked(): boolean {
    return this.#linkUp && this.#bound?.up === true;
  }

  /** Publishes a push or broadcast to the other instances (one message); false while Redis is away. */
  publish(to: HubTarget, frame: string): boolean {
    const c = this.#bound;
    if (!this.linked || !c || !this.#keys || !this.#subscribed) return false;
    const msg = encodeDeliver(this.#instance, to, frame);
    (this.#sharded ? c.redis.spublish(this.#keys.channel, msg) : c.redis.publish(this.#keys.channel, msg)).catch(() => this.#failed());
    return true;
  }

  /** A user is online on this instance now (its first client here). */
  localOnline(userId: string): void {
    this.#presenceOp('on', userId);
  }

  /** A user is offline on this instance (its last client here left and the grace passed). */
  localOffline(userId: string): void {
    this.#presenceOp('off', userId);
  }

  /**
   * Message recovery: appends a push to `userId`'s stream (bounded to `size`, kept `ttl`) and
   * resolves with the client frame carrying its `epoch` and `offset`; undefined while Redis is away.
   * `framePrefix` is the client frame without its closing brace.
   */
  append(userId: string, framePrefix: string, history: { size: number; ttl: number }): Promise<string | undefined> {
    const c = this.#bound;
    const k = this.#keys;
    const p = c && k && c.up ? this.#pipeline(c) : undefined;
    if (!p || !k) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      p.hubHistoryAppend(k.history(userId), k.historyMeta(userId), framePrefix, history.size, history.ttl, randomBytes(6).toString('base64url'), (err, f) =>
        resolve(err || typeof f !== 'string' ? undefined : f),
      );
    });
  }

  /** Message recovery: where `userId`'s history stands (started now when it has none); undefined while Redis is away. */
  position(userId: string, ttl: number): Promise<HistoryPosition | undefined> {
    const c = this.#bound;
    const k = this.#keys;
    const p = c && k && c.up ? this.#pipeline(c) : undefined;
    if (!p || !k) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      p.hubHistoryPosition(k.history(userId), k.historyMeta(userId), ttl, randomBytes(6).toString('base64url'), (err, res) => {
        const r = res as [string, number] | undefined;
        resolve(err || !Array.isArray(r) ? undefined : { epoch: r[0], offset: Number(r[1]) });
      });
    });
  }

  /** Message recovery: what a client's `resume` gets: the pushes after `offset`, then `resumed`; or `resume-failed`. */
  async resume(userId: string, epoch: string, offset: number): Promise<string[]> {
    const frames = await this.#recover(userId, epoch, offset);
    if (!frames) return [resumeFailedFrame(epoch, offset)];
    return [...frames, JSON.stringify({ type: 'resumed', epoch, offset: offset + frames.length })];
  }

  /** The frames pushed to `userId` after `offset` of `epoch`, in order; undefined when they cannot all be given. */
  #recover(userId: string, epoch: string, offset: number): Promise<string[] | undefined> {
    const c = this.#bound;
    const k = this.#keys;
    const p = c && k && c.up ? this.#pipeline(c) : undefined;
    if (!p || !k) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      p.hubHistoryRead(k.history(userId), k.historyMeta(userId), epoch, offset, (err, res) => {
        const r = res as string[] | undefined;
        resolve(err || !Array.isArray(r) || r[0] !== 'ok' ? undefined : r.slice(1));
      });
    });
  }

  // --- Redis ------------------------------------------------------------------------------

  #tick(): void {
    const c = this.#opts.cluster();
    if (c !== this.#bound) this.#bind(c);
    if (!c || !c.up || !this.#keys) return;
    if (!this.#subscribed) this.#subscribe(c);
    if (!this.#synced) {
      void this.#sync(c);
      return;
    }
    const k = this.#keys;
    const ttl = c.config.deadAfter;
    const p = this.#pipeline(c);
    if (!p) return;
    p.pexpire(k.presence(this.#instance), ttl).pexpire(k.seq(this.#instance), ttl).pexpire(k.caps(this.#instance), ttl);
    // Instances that left the list (dead for deadAfter) are dropped; new ones are read.
    const live = new Set(c.liveInstanceIds());
    const settled = performance.now() - this.#upAt >= c.config.deadAfter;
    for (const id of settled ? this.remote.prune(live, c.config.deadAfter) : []) this.#log.info({ instance: id }, 'hub: instance gone: its users are offline unless online elsewhere');
    for (const id of live) if (id !== this.#instance && !this.remote.knows(id)) void this.remote.resync(id);
  }

  #bind(c: ClusterActor | undefined): void {
    this.#unbind();
    this.#bound = c;
    if (!c) return;
    this.#instance = c.config.instanceId;
    this.#keys = hubKeys(c.config.keyPrefix, this.listener);
    c.sub.on('smessage', this.#onMessage);
    c.sub.on('message', this.#onMessage);
    c.sub.on('ready', this.#onSubReady);
    this.#stateSub = c.state$.subscribe((s) => this.#onState(s));
  }

  #unbind(): void {
    const c = this.#bound;
    this.#stateSub?.unsubscribe();
    this.#stateSub = undefined;
    this.#bound = undefined;
    this.#synced = false;
    this.#pipe = undefined;
    if (!c) return;
    c.sub.off('smessage', this.#onMessage);
    c.sub.off('message', this.#onMessage);
    c.sub.off('ready', this.#onSubReady);
    if (this.#subscribed && this.#keys) {
      const ch = this.#keys.channel;
      (this.#sharded ? c.sub.sunsubscribe(ch) : c.sub.unsubscribe(ch)).catch(() => {});
    }
    this.#subscribed = false;
  }

  /**
   * Subscribes to the listener's channel, only on a ready subscriber connection. ioredis writes a
   * (S)SUBSCRIBE at once while the connection is still in its handshake (it is allowed while Redis
   * loads); the connection then enters subscriber mode, ioredis's own ready check (INFO) is
   * refused, the connection is dropped, and a subscription made before `ready` is not restored:
   * the instance would stay linked without hearing the others. So the subscription waits for
   * `ready`, and is made again at each `ready` (a reconnect), whatever ioredis restores itself.
   */
  #subscribe(c: ClusterActor): void {
    if (c.sub.status !== 'ready') return;
    const ch = this.#keys!.channel;
    this.#subscribed = true;
    c.sub.ssubscribe(ch).then(
      () => (this.#sharded = true),
      (err: Error) => {
        if (!/unknown command/i.test(err.message)) {
          this.#subscribed = false;
          return;
        }
        // Redis < 7: plain pub/sub.
        this.#sharded = false;
        c.sub.subscribe(ch).catch(() => (this.#subscribed = false));
      },
    );
  }

  #onState(s: RedisState): void {
    const up = s === 'up';
    if (up === this.#linkUp) return;
    this.#linkUp = up;
    if (up) {
      this.#upAt = performance.now();
      this.#log.info('hub: redis up: delivery and presence across instances again (re-announcing this instance\'s users)');
      this.#tick();
    } else {
      this.#synced = false;
      this.#log.warn('hub: redis down: delivery, presence and the per-user cap are this instance\'s only');
    }
  }

  /** Writes this instance's presence set and cap share again, then reads every other instance's set. */
  async #sync(c: ClusterActor): Promise<void> {
    const users = this.#opts.localUsers();
    // Presence is restarting: its users are re-announced first (an empty set would take them offline elsewhere).
    if (this.#syncing || !users) return;
    this.#syncing = true;
    try {
      const k = this.#keys!;
      const ttl = c.config.deadAfter;
      const pairs: (string | number)[] = [];
      for (const [u, n] of this.caps.counts()) pairs.push(u, n);
      const res = await hubPipeline(c.redis)
        .hubPresenceReset(k.presence(this.#instance), k.seq(this.#instance), ttl, this.#publishCmd, k.channel, this.#instance, [...users])
        .hubCapsReset(k.caps(this.#instance), ttl, pairs)
        .exec();
      const failed = res ? res.find(([err]) => err) : [new Error('no reply')];
      if (failed) throw failed[0];
      if (this.#bound !== c) return;
      this.#synced = true;
      const ids = new Set([...c.liveInstanceIds(), ...this.remote.instances()]);
      ids.delete(this.#instance);
      await Promise.all([...ids].map((id) => this.remote.resync(id)));
    } catch (err) {
      this.#log.debug({ err }, 'hub: cluster sync failed (retried at the next heartbeat)');
    } finally {
      this.#syncing = false;
    }
  }

  get #publishCmd(): string {
    return this.#sharded ? 'SPUBLISH' : 'PUBLISH';
  }

  async #fetch(instance: string): Promise<{ users: string[]; seq: number }> {
    const c = this.#bound;
    if (!c || !this.#keys) throw new Error('not bound');
    const res = await c.redis.multi().smembers(this.#keys.presence(instance)).get(this.#keys.seq(instance)).exec();
    if (!res || res.some(([err]) => err)) throw new Error('presence read failed');
    return { users: res[0]![1] as string[], seq: Number(res[1]![1] ?? 0) };
  }

  #presenceOp(op: 'on' | 'off', userId: string): void {
    const c = this.#bound;
    const k = this.#keys;
    // Not synced: the whole set is written at the next sync, with this change in it.
    if (!c || !k || !this.#synced || !c.up) return;
    this.#pipeline(c)?.hubPresenceOp(k.presence(this.#instance), k.seq(this.#instance), op, userId, c.config.deadAfter, this.#publishCmd, k.channel, this.#instance);
  }

  async #admit(userId: string): Promise<boolean | undefined> {
    const c = this.#bound;
    const k = this.#keys;
    const p = c && k && this.#synced && c.up ? this.#pipeline(c) : undefined;
    if (!p || !c || !k) return undefined;
    const others = new Set([...c.liveInstanceIds(), ...this.remote.instances()]);
    others.delete(this.#instance);
    const keys = [k.caps(this.#instance), ...[...others].map((i) => k.caps(i))];
    return new Promise((resolve) => {
      p.hubCapsAdmit(keys.length, [...keys, userId, this.#opts.maxClientsPerUser(), c.config.deadAfter], (err, v) =>
        resolve(err ? undefined : v === 1),
      );
    });
  }

  #capsAdd(userId: string, delta: number): void {
    const c = this.#bound;
    const k = this.#keys;
    if (!c || !k || !this.#synced || !c.up) return;
    this.#pipeline(c)?.hubCapsAdd(k.caps(this.#instance), userId, delta, c.config.deadAfter);
  }

  /** The pipeline of this tick: commands issued in one turn of the event loop go in one round trip. */
  #pipeline(c: ClusterActor): HubPipeline | undefined {
    if (this.#pipe) return this.#pipe;
    const p = hubPipeline(c.redis);
    this.#pipe = p;
    setImmediate(() => {
      if (this.#pipe === p) this.#pipe = undefined;
      p.exec().then(
        (res) => {
          if (res?.some(([err]) => err)) this.#failed();
        },
        () => this.#failed(),
      );
    });
    return p;
  }

  /** A write failed: what Redis holds of this instance may be stale; written again at the next tick. */
  #failed(): void {
    this.#synced = false;
  }

  #message(channel: string, text: string): void {
    if (channel !== this.#keys?.channel) return;
    const m = decodeHubWire(text);
    if (!m || m.instance === this.#instance) return;
    if (m.kind === 'deliver') this.#opts.deliver(m.to, m.frame);
    else this.remote.message(m.instance, m.seq, m.op, m.userId);
  }

  // --- lifecycle --------------------------------------------------------------------------

  /** Leaves: this instance's presence set and cap share are deleted, and the others hear `gone`. */
  protected requestStop(): boolean {
    clearInterval(this.#timer);
    const c = this.#bound;
    const k = this.#keys;
    if (!c || !k || !c.up) {
      this.exit('shutdown');
      return true;
    }
    void hubPipeline(c.redis)
      .hubPresenceGone(k.presence(this.#instance), k.seq(this.#instance), this.#publishCmd, k.channel, this.#instance)
      .del(k.caps(this.#instance))
      .exec()
      .catch(() => {})
      .finally(() => this.exit('shutdown'));
    return true;
  }

  protected forceStop(): void {
    this.exit('killed');
  }

  /** Timers, subscriptions and maps go with the actor, whatever ended it. */
  protected override exit(reason: ExitReason, error?: unknown): void {
    if (this.status === 'exited') return;
    clearInterval(this.#timer);
    this.#unbind();
    this.remote.clear();
    this.caps.clear();
    super.exit(reason, error);
  }
}
