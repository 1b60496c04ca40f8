import diagnostics from 'node:diagnostics_channel';
import { tlsCountsSnapshot } from '../tls/listener-tls.ts';
import { emptyHttpStats } from '../http/stats.ts';
import type { MessagePort } from 'node:worker_threads';
import type { Logger } from 'pino';
import { Supervisor, type ChildSpec } from '../supervisors/supervisor.ts';
import { ListenerActor } from '../actors/listener.ts';
import { ListenerBase } from '../actors/listener-base.ts';
import { live } from '../runtime/live.ts';
import type { Actor } from '../runtime/actor.ts';
import { actorEvents$, setActorEventsEnabled } from '../runtime/events.ts';
import { InjectedFaultError, errorChain } from '../errors.ts';
import { StateTable } from './state-table.ts';
import { Balancer, type BreakerReport } from './balancer.ts';
import { ShardHubRoutes, isHub, loadHub } from './shard-hub.ts';
import { ShardHttp, isHttp } from './shard-http.ts';
import { heartbeatIntervalMs, type ShardConfig, type ShardListener, type ShardUpstream } from './shard-config.ts';
import type { FromShard, ShardInit, ShardResult, ToShard } from './protocol.ts';
import { HUB_TO_SHARD_TYPES, type HubToShard } from '../hub/messages.ts';
import { setRateAsks } from '../cluster/ratelimit-shard.ts';

export interface RunShardOptions {
  log: Logger;
  /**
   * True when the shard runs in the main thread (`workers: 0`). An injected crash then rejects the
   * shard's promise (in a worker thread it is an uncaught exception: the thread dies, as a real bug
   * would kill it), and there is no heartbeat (nothing could watch a hung main thread).
   */
  inThread: boolean;
  /** Aborting kills the shard at once (no drain). In a worker thread piscina terminates it instead. */
  signal?: AbortSignal;
}

/** A TCP or hub listener: what a shard binds, retires and drains. */
type AnyListener = ListenerBase<Actor>;

function isListener(a: unknown): a is AnyListener {
  return a instanceof ListenerBase;
}

/**
 * A data-plane shard: its own supervisor with one {@link ListenerActor} per listener, all bound
 * with `reusePort` so the kernel spreads connections over shards. It runs until drained through
 * `port` (or killed, or its supervisor gives up); the same code runs in a worker thread (piscina
 * task) or, with `workers: 0`, in the main thread.
 *
 * Invariant: when {@link Shard.run} settles, nothing of this shard is alive any more (its
 * listeners, retiring ones included, and their connections have exited and counted themselves
 * down), so the thread may run a new incarnation and the main thread may give back what is left.
 *
 * @example
 * const { port1, port2 } = new MessageChannel();
 * const done = new Shard(init, port2, { log, inThread: true }).run();
 * port1.postMessage({ type: 'drain', timeoutMs: 30_000 });
 * await done;
 */
export class Shard {
  readonly index: number;
  readonly #init: ShardInit;
  readonly #port: MessagePort;
  readonly #opts: RunShardOptions;
  readonly #log: Logger;
  readonly #table: StateTable;
  #config: ShardConfig;
  readonly #sup: Supervisor;
  /** Listeners taken out of service by a reload, still draining their connections. */
  readonly #retiring = new Set<AnyListener>();
  /**
   * Child ids per listener name: a listener that moves to a new address gets a new incarnation
   * (`listener:NAME~2`) bound before the old one drains, so the move drops nothing.
   */
  readonly #childIds: Map<string, string>;
  #generation = 0;
  #draining = false;
  readonly #hub: ShardHubRoutes;
  /** Made with the first http listener. */
  #http: ShardHttp | undefined;
  #eventsSub: { unsubscribe(): void } | undefined;
  #heartbeat: NodeJS.Timeout | undefined;
  #ended = false;
  #resolve!: (r: ShardResult) => void;
  #reject!: (e: unknown) => void;
  readonly #done = new Promise<ShardResult>((res, rej) => {
    this.#resolve = res;
    this.#reject = rej;
  });

  constructor(init: ShardInit, port: MessagePort, opts: RunShardOptions) {
    this.index = init.shard;
    this.#init = init;
    this.#port = port;
    this.#opts = opts;
    this.#log = opts.log;
    this.#table = StateTable.attach(init.buffers).logTo(opts.log);
    this.#config = init.config;
    this.#childIds = new Map(this.#config.listeners.map((l) => [l.name, `listener:${l.name}`]));
    this.#hub = new ShardHubRoutes(this.index, this.#table, this.#post, () => [...this.#sup.children(), ...this.#retiring], init.hubNodes);
    this.#sup = new Supervisor(
      { id: `shard-${this.index}:supervisor`, strategy: 'one_for_one', maxRestarts: 10, periodMs: 10_000, children: this.#config.listeners.map((l) => this.#listenerChild(l)) },
      { log: this.#log },
    );
  }

  readonly #post = (m: FromShard): void => this.#port.postMessage(m);
  readonly #onPortMessage = (m: ToShard): void => this.onMessage(m);
  readonly #onRestart = (m: unknown): void => this.#post({ type: 'restart', ...(m as { supervisor: string; child: string; restarts: number }) });
  readonly #onAbort = (): void => this.kill();

  /** Runs the shard: starts it, then resolves when it drained (`ok`), was killed, or failed. */
  async run(): Promise<ShardResult> {
    this.#port.on('message', this.#onPortMessage);
    setRateAsks((asks) => this.#post({ type: 'rl-ask', asks }));
    diagnostics.subscribe('gatehouse:supervisor:restart', this.#onRestart);
    if (this.#config.debug || this.#config.actorEvents) this.onMessage({ type: 'events', enabled: true });
    this.#opts.signal?.addEventListener('abort', this.#onAbort, { once: true });
    this.#sup.monitor((down) => {
      if (this.#draining) return;
      // The shard supervisor gave up (restart intensity): the shard fails and its ShardActor's
      // supervisor decides.
      const err = down.error as { code?: string; message?: string } | undefined;
      this.#end({ ok: false, code: err?.code ?? 'GH_ERR_SHARD', message: String(err?.message ?? down.reason) });
    });
    try {
      await this.start();
      return await this.#done;
    } catch (err) {
      // A failed start, or an injected crash in the main thread: what started is killed.
      this.#ended = true;
      this.#killAll();
      return { ok: false, code: (err as { code?: string }).code ?? 'GH_ERR_SHARD', message: errorChain(err) };
    } finally {
      clearInterval(this.#heartbeat);
      this.#opts.signal?.removeEventListener('abort', this.#onAbort);
      this.#port.off('message', this.#onPortMessage);
      setRateAsks(undefined);
      this.#port.close();
      this.#eventsSub?.unsubscribe();
      diagnostics.unsubscribe('gatehouse:supervisor:restart', this.#onRestart);
      if (!this.#opts.inThread) this.#killLeftovers();
    }
  }

  /** Binds every listener, then tells the main thread `ready` and starts the heartbeat. */
  async start(): Promise<void> {
    await this.#sup.start();
    this.#config = this.#withBoundPorts(this.#config);
    await this.#applyPause();
    this.#post({ type: 'ready', listeners: this.#boundListeners() });
    this.#beat();
  }

  /**
   * (Re)arms the heartbeat: the main thread's watchdog reads this counter, and a thread stuck in
   * a loop stops bumping it. In the main thread nothing could watch it, so there is none.
   */
  #beat(): void {
    if (this.#opts.inThread || this.#ended) return;
    clearInterval(this.#heartbeat);
    const beat = (): void => this.#table.shardBeat(this.index);
    beat();
    this.#heartbeat = setInterval(beat, heartbeatIntervalMs(this.#config)).unref();
  }

  /** Applies a reloaded config: listeners kept in place, moved, removed or added (see docs/architecture.md, Reload). */
  async reconcile(next: ShardConfig): Promise<void> {
    const prev = this.#config;
    this.#config = next;
    this.#log.level = next.logLevel;
    // A shorter runtime.watchdog needs faster beats at once (the main thread's limit changed too).
    if (heartbeatIntervalMs(next) !== heartbeatIntervalMs(prev)) this.#beat();
    for (const l of prev.listeners) if (!next.listeners.some((x) => x.name === l.name)) this.#retire(l.name);
    this.#hub.retain((name) => next.listeners.some((x) => x.name === name && x.protocol === 'hub'));
    await this.#http?.configure(next);
    for (const l of next.listeners) {
      const old = prev.listeners.find((x) => x.name === l.name);
      if (old && old.host === l.host && old.port === l.port && old.protocol === l.protocol && (old.tls === undefined) === (l.tls === undefined) && (old.proxyProtocol === undefined) === (l.proxyProtocol === undefined)) {
        // Same address: reconfigure in place; open connections keep their settings.
        const a = this.#sup.child(this.#childIds.get(l.name)!);
        if (isHub(a) || isHttp(a)) a.reconfigure(l);
        else if (a instanceof ListenerActor) {
          const upstream = this.#upstreamOf(l);
          a.reconfigure(l, upstream, upstream && this.#balancer(upstream));
        }
        continue;
      }
      // Another protocol (or TLS or the PROXY protocol turned on or off) on the same address: the old one stops listening first (its open
      // connections drain in the background), since without reusePort both cannot bind it.
      if (old && old.host === l.host && old.port === l.port) this.#retire(l.name);
      const id = old ? `listener:${l.name}~${++this.#generation}` : `listener:${l.name}`;
      const oldId = this.#childIds.get(l.name);
      await this.#sup.startChild({ ...this.#listenerChild(l), id });
      if (oldId) {
        this.#childIds.set(l.name, oldId);
        this.#retire(l.name);
      }
      this.#childIds.set(l.name, id);
    }
    this.#config = this.#withBoundPorts(next);
    await this.#applyPause();
  }

  /** Pauses or resumes every listener in service as the config says (`POST /drain` and `/undrain`). */
  async #applyPause(): Promise<void> {
    const paused = this.#config.paused === true;
    const resumes: Promise<void>[] = [];
    for (const id of this.#childIds.values()) {
      const a = this.#sup.child(id);
      if (!isListener(a)) continue;
      if (paused) a.pause();
      else resumes.push(a.resume());
    }
    await Promise.all(resumes);
  }

  /**
   * Stops accepting everywhere, lets open connections finish (up to `timeoutMs`, then kills
   * them) and resolves the shard `ok`.
   */
  async drain(timeoutMs: number): Promise<void> {
    if (this.#draining || this.#ended) return;
    this.#draining = true;
    for (const a of this.#sup.children()) if (isListener(a)) a.stopAccepting();
    const counts = live.countsByType();
    this.#log.info({ connections: (counts.connection ?? 0) + (counts['http-connection'] ?? 0), timeoutMs }, 'shard draining');
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'timeout'>((r) => (timer = setTimeout(r, timeoutMs, 'timeout')));
    const stopped = Promise.all([this.#sup.shutdown('infinity'), ...[...this.#retiring].map((a) => a.exited())]);
    const r = await Promise.race([stopped.then(() => 'done' as const), deadline]);
    clearTimeout(timer);
    if (r === 'timeout') this.#log.warn({ connections: live.countsByType().connection ?? 0 }, 'drain deadline reached, closing connections');
    // The spans of the requests just drained are exported before the thread may be terminated.
    await this.#http?.flush();
    this.#end({ ok: true });
  }

  /** Kills the shard at once (no drain): every listener and connection, retiring ones included. */
  kill(): void {
    this.#end({ ok: false, code: 'GH_ERR_SHARD', message: 'killed' });
  }

  /** Handles one message from the main thread. */
  onMessage(m: ToShard): void {
    if (HUB_TO_SHARD_TYPES.has(m.type)) {
      this.#hub.route(m as HubToShard);
      return;
    }
    switch (m.type) {
      case 'tree': {
        const t = this.#sup.tree(m.opts);
        if (m.opts.depth === undefined || m.opts.depth > 0) for (const a of this.#retiring) t.children.push({ ...a.tree(m.opts, 1), retiring: true });
        this.#post({ type: 'reply', id: m.id, value: t });
        break;
      }
      case 'http-stats': {
        const tls = tlsCountsSnapshot();
        const http = this.#http?.stats.snapshot();
        this.#post({ type: 'reply', id: m.id, value: tls.length === 0 ? http : { ...(http ?? emptyHttpStats()), tls } });
        break;
      }
      case 'counts':
        this.#post({ type: 'reply', id: m.id, value: live.countsByType() });
        break;
      case 'config':
        this.reconcile(m.config).then(
          () => this.#post({ type: 'reply', id: m.id, value: this.#boundListeners() }),
          (err: Error) => this.#post({ type: 'reply', id: m.id, error: { code: (err as { code?: string }).code, message: errorChain(err) } }),
        );
        break;
      case 'drain':
        void this.drain(m.timeoutMs);
        break;
      case 'events':
        setActorEventsEnabled(m.enabled);
        this.#eventsSub?.unsubscribe();
        this.#eventsSub = m.enabled ? actorEvents$.subscribe((event) => this.#post({ type: 'actor-event', event })) : undefined;
        break;
      case 'crash-actor':
        this.#post({ type: 'reply', id: m.id, value: this.#crashActor(m.actor) });
        break;
      case 'crash':
        this.#crash();
        break;
      case 'hang':
        this.#hang();
        break;
    }
  }

  /**
   * Ends the shard once: kills what is still alive (nothing after a drain that finished), then
   * settles. Retiring listeners go too: the thread may be reused, and the main thread gives back
   * what this shard still counts only once it has settled.
   */
  #end(result: ShardResult | { error: unknown }): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#draining = true;
    this.#killAll();
    if ('error' in result) this.#reject(result.error);
    else this.#resolve(result);
  }

  #killAll(): void {
    if (this.#sup.status !== 'exited') this.#sup.kill();
    for (const a of this.#retiring) a.kill();
    void this.#http?.close();
  }

  /**
   * The last guard before a worker thread is handed back to piscina: an actor still alive here
   * would outlive its shard (and count itself down after the main thread gave its places back).
   */
  #killLeftovers(): void {
    const left = live.list();
    if (left.length === 0) return;
    this.#log.error({ actors: left.slice(0, 10).map((a) => a.id), count: left.length }, 'shard ended with live actors: killing them');
    for (const a of left) a.kill();
  }

  #crash(): void {
    const err = new InjectedFaultError(`shard ${this.index}`);
    this.#log.error({ err }, 'injected fault: crashing shard');
    if (this.#opts.inThread) this.#end({ error: err });
    else
      setImmediate(() => {
        throw err;
      });
  }

  /** Debug: a busy loop that never yields, for the main thread's watchdog to find (worker threads only). */
  #hang(): void {
    if (this.#opts.inThread) {
      this.#log.warn('injected hang refused: this shard runs in the main thread');
      return;
    }
    this.#log.error('injected fault: shard thread hanging');
    setImmediate(() => {
      for (;;);
    });
  }

  #crashActor(id: string): boolean {
    const a = findActor(this.#sup, id);
    if (!a) return false;
    const crash = (a as { crash?: (err: unknown) => unknown }).crash;
    this.#log.warn({ actor: id }, 'injected fault: crashing actor');
    // An actor with no crash of its own (a listener) is killed: an abnormal exit all the same.
    if (typeof crash === 'function') crash.call(a, new InjectedFaultError(id));
    else a.kill();
    return true;
  }

  #retire(name: string): void {
    const id = this.#childIds.get(name)!;
    this.#childIds.delete(name);
    const now = this.#sup.child(id);
    if (isListener(now)) now.stopAccepting();
    // Out of the supervisor, it drains in the background (up to shutdownTimeout): neither the
    // reload nor the supervisor's next operations wait for it.
    void this.#sup.detachChild(id).then((a) => {
      if (!isListener(a)) return;
      // The shard ended meanwhile: nothing of it may outlive it.
      if (this.#ended) return a.kill();
      this.#retiring.add(a);
      void a.shutdown(this.#config.shutdownTimeoutMs).finally(() => this.#retiring.delete(a));
    });
  }

  #listenerChild(l: ShardListener): ChildSpec {
    return {
      id: `listener:${l.name}`,
      restart: 'permanent',
      // Read when the listener is stopped: a reloaded shutdownTimeout applies.
      shutdown: () => this.#config.shutdownTimeoutMs,
      start: () => {
        // A restart after a crash uses the listener's settings as reloaded since, not the original.
        // (By name: a port-0 listener is recorded with the port it got, which a restart rebinds.)
        const cur = this.#config.listeners.find((x) => x.name === l.name) ?? l;
        const common = { shard: this.index, listener: cur, table: this.#table, log: this.#log, reusePort: this.#init.reusePort };
        if (cur.protocol === 'http') {
          this.#http ??= new ShardHttp(this.#config, (u) => this.#balancer(u), this.index, this.#log);
          return this.#http.start(common);
        }
        if (cur.protocol === 'hub') {
          return loadHub().then(({ HubListenerActor }) => new HubListenerActor({ ...common, post: this.#post, readyNodes: this.#hub.readyNodesOf(cur.name) }).start());
        }
        const upstream = this.#upstreamOf(cur);
        return new ListenerActor({ ...common, upstream, balancer: upstream && this.#balancer(upstream), connectionActor: this.#config.connectionActor }).start();
      },
    };
  }

  #upstreamOf(l: ShardListener): ShardUpstream | undefined {
    return this.#config.upstreams.find((u) => u.name === l.upstream);
  }

  #balancer(upstream: ShardUpstream): Balancer {
    const report = (slot: number, event: BreakerReport): void => this.#post({ type: 'backend', slot, event });
    return new Balancer(upstream, this.#table, this.index, Math.random, report);
  }

  /** Port-0 listeners are recorded with the port they got, so a reload sees them unchanged. */
  #withBoundPorts(c: ShardConfig): ShardConfig {
    return {
      ...c,
      listeners: c.listeners.map((l) => {
        const a = this.#sup.child(this.#childIds.get(l.name) ?? '');
        return l.port === 0 && isListener(a) && a.address ? { ...l, port: a.address.port } : l;
      }),
    };
  }

  #boundListeners(): { name: string; host: string; port: number }[] {
    return [...this.#sup.children()]
      .filter((a): a is AnyListener => isListener(a) && a.address !== undefined && a.status === 'running')
      .map((a) => ({ name: a.name, ...a.address! }));
  }
}

/**
 * Runs a shard until it is drained, killed or fails (see {@link Shard}).
 *
 * @example
 * const done = runShard(init, port2, { log, inThread: true });
 */
export function runShard(init: ShardInit, port: MessagePort, opts: RunShardOptions): Promise<ShardResult> {
  return new Shard(init, port, opts).run();
}

/** The live actor with this id under `root` (depth-first; debug use only: it walks every connection). */
function findActor(root: Actor, id: string): Actor | undefined {
  const stack: Actor[] = [root];
  for (let n = 0; stack.length > 0 && n < 10_000_000; n++) {
    const a = stack.pop()!;
    if (a.id === id) return a;
    for (const c of a.children()) stack.push(c);
  }
  return undefined;
}
