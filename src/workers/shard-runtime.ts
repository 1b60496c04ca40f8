import diagnostics from 'node:diagnostics_channel';
import type { MessagePort } from 'node:worker_threads';
import type { Logger } from 'pino';
import { Supervisor, type ChildSpec } from '../supervisors/supervisor.ts';
import { ListenerActor } from '../actors/listener.ts';
import type { HubListenerActor } from '../actors/hub-listener.ts';

/**
 * The hub's data plane (ws, jose and the client proxies) is loaded by the first hub listener a
 * shard starts: a TCP-only shard does not carry it in its heap (a bigger heap makes every
 * full collection on the bulk path slower).
 */
let hubModule: typeof import('../actors/hub-listener.ts') | undefined;
async function loadHub(): Promise<typeof import('../actors/hub-listener.ts')> {
  hubModule ??= await import('../actors/hub-listener.ts');
  return hubModule;
}
function isHub(a: unknown): a is HubListenerActor {
  return hubModule !== undefined && a instanceof hubModule.HubListenerActor;
}
import { live } from '../runtime/live.ts';
import type { Actor } from '../runtime/actor.ts';
import { actorEvents$, setActorEventsEnabled } from '../runtime/events.ts';
import { InjectedFaultError, errorChain } from '../errors.ts';
import { StateTable } from './state-table.ts';
import { Balancer, type BreakerReport } from './balancer.ts';
import type { ShardConfig, ShardListener, ShardUpstream } from './shard-config.ts';
import type { FromShard, ShardInit, ShardResult, ToShard } from './protocol.ts';

export interface RunShardOptions {
  log: Logger;
  /**
   * How an injected crash is delivered. In a worker thread it is an uncaught exception (the thread
   * dies, as a real bug would kill it); in the main thread it rejects the shard's promise instead.
   */
  inThread: boolean;
  /** Aborting kills the shard at once (no drain). In a worker thread piscina terminates it instead. */
  signal?: AbortSignal;
}

/**
 * A data-plane shard: its own supervisor with one {@link ListenerActor} per listener, all bound
 * with `reusePort` so the kernel spreads connections over shards. Runs until drained through
 * `port`; the same code runs in a worker thread (piscina task) or, with `workers: 0`, in the main
 * thread.
 *
 * @example
 * const { port1, port2 } = new MessageChannel();
 * const done = runShard(init, port2, { log, inThread: true });
 * port1.postMessage({ type: 'drain', timeoutMs: 30_000 });
 * await done;
 */
export async function runShard(init: ShardInit, port: MessagePort, opts: RunShardOptions): Promise<ShardResult> {
  const { shard } = init;
  const table = StateTable.attach(init.buffers);
  const log = opts.log;
  let config = init.config;
  const post = (m: FromShard): void => port.postMessage(m);
  const report = (slot: number, event: BreakerReport): void => post({ type: 'backend', slot, event });
  const newBalancer = (upstream: ShardUpstream): Balancer => new Balancer(upstream, table, shard, Math.random, report);
  /**
   * Each hub listener's ready nodes, as the main thread last said (`hub-nodes`). Kept here, not in
   * the listener, so a restarted or moved incarnation starts with them.
   */
  const hubNodes = new Map<string, readonly string[]>(Object.entries(init.hubNodes ?? {}));
  const readyNodesOf = (name: string) => (): readonly string[] => hubNodes.get(name) ?? [];

  const listenerChild = (l: ShardListener): ChildSpec => ({
    id: `listener:${l.name}`,
    restart: 'permanent',
    // Read when the listener is stopped: a reloaded shutdownTimeout applies.
    shutdown: () => config.shutdownTimeoutMs,
    start: () => {
      // A restart after a crash uses the listener's settings as reloaded since, not the original.
      // (By name: a port-0 listener is recorded with the port it got, which a restart rebinds.)
      const cur = config.listeners.find((x) => x.name === l.name) ?? l;
      if (cur.protocol === 'hub') {
        return loadHub().then(({ HubListenerActor }) => new HubListenerActor({ shard, listener: cur, table, log, reusePort: init.reusePort, post, readyNodes: readyNodesOf(cur.name) }).start());
      }
      const upstream = config.upstreams.find((u) => u.name === cur.upstream);
      return new ListenerActor({
        shard,
        listener: cur,
        upstream,
        balancer: upstream && newBalancer(upstream),
        table,
        log,
        connectionActor: config.connectionActor,
        reusePort: init.reusePort,
      }).start();
    },
  });

  const sup = new Supervisor(
    { id: `shard-${shard}:supervisor`, strategy: 'one_for_one', maxRestarts: 10, periodMs: 10_000, children: config.listeners.map(listenerChild) },
    { log },
  );

  const onRestart = (m: unknown): void => post({ type: 'restart', ...(m as { supervisor: string; child: string; restarts: number }) });
  diagnostics.subscribe('gatehouse:supervisor:restart', onRestart);
  let eventsSub: { unsubscribe(): void } | undefined;

  let settle!: (r: ShardResult) => void;
  let fail!: (e: unknown) => void;
  const done = new Promise<ShardResult>((res, rej) => {
    settle = res;
    fail = rej;
  });
  let draining = false;

  const drain = async (timeoutMs: number): Promise<void> => {
    if (draining) return;
    draining = true;
    for (const a of sup.children()) if (isListener(a)) a.stopAccepting();
    log.info({ connections: live.countsByType().connection ?? 0, timeoutMs }, 'shard draining');
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'timeout'>((r) => (timer = setTimeout(r, timeoutMs, 'timeout')));
    const stopped = Promise.all([sup.shutdown('infinity'), ...[...retiring].map((a) => a.exited())]);
    const r = await Promise.race([stopped.then(() => 'done' as const), deadline]);
    clearTimeout(timer);
    if (r === 'timeout') {
      log.warn({ connections: live.countsByType().connection ?? 0 }, 'drain deadline reached, closing connections');
      sup.kill();
      for (const a of retiring) a.kill();
    }
    settle({ ok: true });
  };

  // Child ids per listener name: a listener that moves to a new address gets a new incarnation
  // (`listener:NAME~2`) bound before the old one drains, so the move drops nothing.
  /** Listeners taken out of service by a reload, still draining their connections. */
  const retiring = new Set<AnyListener>();
  const childIds = new Map(config.listeners.map((l) => [l.name, `listener:${l.name}`]));
  let generation = 0;

  /** Port-0 listeners are recorded with the port they got, so a reload sees them unchanged. */
  const withBoundPorts = (c: ShardConfig): ShardConfig => ({
    ...c,
    listeners: c.listeners.map((l) => {
      const a = sup.child(childIds.get(l.name) ?? '');
      return l.port === 0 && isListener(a) && a.address ? { ...l, port: a.address.port } : l;
    }),
  });

  const reconcile = async (next: ShardConfig): Promise<void> => {
    const prev = config;
    config = next;
    const upstreamOf = (l: ShardListener) => next.upstreams.find((u) => u.name === l.upstream);
    log.level = next.logLevel;
    const retire = (name: string): void => {
      const id = childIds.get(name)!;
      childIds.delete(name);
      const now = sup.child(id);
      if (isListener(now)) now.stopAccepting();
      // Out of the supervisor, it drains in the background (up to shutdownTimeout): neither the
      // reload nor the supervisor's next operations wait for it.
      void sup.detachChild(id).then((a) => {
        if (!isListener(a)) return;
        retiring.add(a);
        void a.shutdown(config.shutdownTimeoutMs).finally(() => retiring.delete(a));
      });
    };
    for (const l of prev.listeners) if (!next.listeners.some((x) => x.name === l.name)) retire(l.name);
    for (const name of hubNodes.keys()) if (!next.listeners.some((x) => x.name === name && x.protocol === 'hub')) hubNodes.delete(name);
    for (const l of next.listeners) {
      const old = prev.listeners.find((x) => x.name === l.name);
      if (old && old.host === l.host && old.port === l.port && old.protocol === l.protocol) {
        // Same address: reconfigure in place; open connections keep their settings.
        const a = sup.child(childIds.get(l.name)!);
        if (isHub(a)) {
          a.reconfigure(l);
          continue;
        }
        const upstream = upstreamOf(l);
        if (a instanceof ListenerActor) a.reconfigure(l, upstream, upstream && newBalancer(upstream));
        continue;
      }
      // Another protocol on the same address: the old one stops listening first (its open
      // connections drain in the background), since without reusePort both cannot bind it.
      if (old && old.host === l.host && old.port === l.port) retire(l.name);
      const id = old ? `listener:${l.name}~${++generation}` : `listener:${l.name}`;
      const oldId = childIds.get(l.name);
      await sup.startChild({ ...listenerChild(l), id });
      if (oldId) {
        childIds.set(l.name, oldId);
        retire(l.name);
      }
      childIds.set(l.name, id);
    }
    config = withBoundPorts(next);
  };

  const boundListeners = (): { name: string; host: string; port: number }[] =>
    [...sup.children()]
      .filter((a): a is AnyListener => isListener(a) && a.address !== undefined && a.status === 'running')
      .map((a) => ({ name: a.name, ...a.address! }));

  /**
   * Every incarnation of a hub listener that may hold clients: the current one, one being
   * detached by a reload, and retiring ones still draining theirs.
   */
  const hubListeners = (name: string): Set<HubListenerActor> => {
    const out = new Set<HubListenerActor>();
    for (const a of sup.children()) if (isHub(a) && a.name === name) out.add(a);
    for (const a of retiring) if (isHub(a) && a.name === name) out.add(a);
    return out;
  };

  const onMessage = (m: ToShard): void => {
    switch (m.type) {
      case 'tree': {
        const t = sup.tree(m.opts);
        if (m.opts.depth === undefined || m.opts.depth > 0) for (const a of retiring) t.children.push({ ...a.tree(m.opts, 1), retiring: true });
        post({ type: 'reply', id: m.id, value: t });
        break;
      }
      case 'counts':
        post({ type: 'reply', id: m.id, value: live.countsByType() });
        break;
      case 'config':
        reconcile(m.config).then(
          () => post({ type: 'reply', id: m.id, value: boundListeners() }),
          (err: Error) => post({ type: 'reply', id: m.id, error: { code: (err as { code?: string }).code, message: errorChain(err) } }),
        );
        break;
      case 'drain':
        void drain(m.timeoutMs);
        break;
      case 'events':
        setActorEventsEnabled(m.enabled);
        eventsSub?.unsubscribe();
        eventsSub = m.enabled ? actorEvents$.subscribe((event) => post({ type: 'actor-event', event })) : undefined;
        break;
      case 'hub-nodes':
        hubNodes.set(m.listener, [...m.ready]);
        break;
      case 'hub-resync':
        for (const l of hubListeners(m.listener)) l.resync();
        break;
      case 'hub-deliver': {
        let delivered = 0;
        for (const l of hubListeners(m.listener)) delivered += l.deliver(m.to, m.frame);
        // Answered also when this shard has no such listener (the main thread counts every shard's answer).
        if (m.ack !== undefined) post({ type: 'hub-delivered', listener: m.listener, ack: m.ack, delivered });
        table.hubDeliverDone(shard);
        break;
      }
      case 'hub-node-down':
        for (const l of hubListeners(m.listener)) l.nodeDown(m.node);
        break;
      case 'hub-reply':
        for (const l of hubListeners(m.listener)) if (l.reply(m.clientId, m.frame)) break;
        break;
      case 'crash-actor': {
        const a = findActor(sup, m.actor);
        const crash = (a as { crash?: (err: unknown) => unknown } | undefined)?.crash;
        if (a && typeof crash === 'function') {
          log.warn({ actor: m.actor }, 'injected fault: crashing actor');
          crash.call(a, new InjectedFaultError(m.actor));
        }
        post({ type: 'reply', id: m.id, value: Boolean(a && typeof crash === 'function') });
        break;
      }
      case 'crash': {
        const err = new InjectedFaultError(`shard ${shard}`);
        log.error({ err }, 'injected fault: crashing shard');
        if (opts.inThread) fail(err);
        else
          setImmediate(() => {
            throw err;
          });
        break;
      }
    }
  };
  port.on('message', onMessage);
  if (config.debug || config.actorEvents) onMessage({ type: 'events', enabled: true });
  const onAbort = (): void => {
    draining = true;
    sup.kill();
    for (const a of retiring) a.kill();
    settle({ ok: false, code: 'GH_ERR_SHARD', message: 'killed' });
  };
  opts.signal?.addEventListener('abort', onAbort, { once: true });

  sup.monitor((down) => {
    if (draining) return;
    // The shard supervisor gave up (restart intensity): the shard fails and its ShardActor's
    // supervisor decides.
    settle({ ok: false, code: (down.error as { code?: string })?.code ?? 'GH_ERR_SHARD', message: String((down.error as Error)?.message ?? down.reason) });
  });

  try {
    await sup.start();
    config = withBoundPorts(config);
    post({ type: 'ready', listeners: boundListeners() });
    return await done;
  } catch (err) {
    if (sup.status !== 'exited') sup.kill();
    return { ok: false, code: (err as { code?: string }).code ?? 'GH_ERR_SHARD', message: errorChain(err) };
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    port.off('message', onMessage);
    port.close();
    eventsSub?.unsubscribe();
    diagnostics.unsubscribe('gatehouse:supervisor:restart', onRestart);
  }
}

type AnyListener = ListenerActor | HubListenerActor;

function isListener(a: unknown): a is AnyListener {
  return a instanceof ListenerActor || isHub(a);
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
