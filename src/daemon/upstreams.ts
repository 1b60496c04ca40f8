import type { Logger } from 'pino';
import { Supervisor, supervisorChild, type ChildSpec } from '../supervisors/supervisor.ts';
import { MachineActor } from '../runtime/machine-actor.ts';
import type { Actor } from '../runtime/actor.ts';
import { Registry } from '../runtime/registry.ts';
import { breakerMachine, BREAKER, type BreakerEvent } from '../actors/breaker.ts';
import { readFileSync } from 'node:fs';
import { healthProbeMachine, type ProbeTarget } from '../actors/health-probe.ts';
import type { UpstreamTlsConfig } from '../config/types.ts';
import { currentUpstreamTls } from '../tls/upstream-files.ts';
import { B, type StateTable } from '../workers/state-table.ts';
import type { UpstreamConfig } from '../config/types.ts';

export interface UpstreamsOptions {
  table: StateTable;
  /** The state-table row of a backend (stable across reloads). */
  slotOf: (upstream: string, address: string) => number;
  log: Logger;
}

/** A backend's control-plane actors, keyed by child id, with what they were started from. */
interface BackendActorSpec {
  id: string;
  /** Changes when the actor must be restarted with new settings. */
  fingerprint: string;
  spec: ChildSpec;
}

/**
 * The upstreams' control plane: `upstreams` (one_for_one) holds one
 * `upstream:NAME` supervisor per upstream, which holds a HealthProbeActor (`probe:NAME/ADDRESS`)
 * and a BreakerActor (`breaker:NAME/ADDRESS`) per backend. Their verdicts reach every shard
 * through the state table; shards' rare reports (a backend's failures reaching the threshold, a
 * trial's outcome) come back as messages and are routed here to the backend's breaker.
 *
 * Breakers are found by state-table slot through a {@link Registry}, which their DOWN cleans:
 * a removed or crashed breaker leaves no entry behind.
 *
 * @example
 * const ups = new Upstreams({ table, slotOf, log });
 * rootChildren.push(ups.child(config.upstreams));
 * ups.report(slot, { type: 'failures' }); // from a shard
 */
export class Upstreams {
  readonly #opts: UpstreamsOptions;
  #supervisor: Supervisor | undefined;
  /** Live breakers by state-table slot. */
  readonly breakers = new Registry<number>('breakers', { slot: (slot) => String(slot) });

  constructor(opts: UpstreamsOptions) {
    this.#opts = opts;
  }

  /** The `upstreams` subtree's child spec, for the config the daemon starts with. */
  child(upstreams: UpstreamConfig[]): ChildSpec {
    const spec = supervisorChild({ id: 'upstreams', strategy: 'one_for_one', maxRestarts: 5, periodMs: 30_000, children: upstreams.map((u) => this.#upstreamChild(u)) }, { log: this.#opts.log });
    return {
      ...spec,
      start: async (ctx) => {
        const sup = (await spec.start(ctx)) as Supervisor;
        this.#supervisor = sup;
        return sup;
      },
    };
  }

  /** Routes a shard's report to the backend's breaker; dropped when it has none (breaker off, or restarting). */
  report(slot: number, event: BreakerEvent): void {
    const [entry] = this.breakers.lookup('slot', String(slot));
    (entry?.actor as MachineActor | undefined)?.send(event);
  }

  #upstreamChild(u: UpstreamConfig, fresh?: ReadonlySet<string>): ChildSpec {
    return supervisorChild(
      { id: `upstream:${u.name}`, type: 'upstream', strategy: 'one_for_one', maxRestarts: 10, periodMs: 10_000, children: this.#backendActors(u, fresh).map((a) => a.spec) },
      { log: this.#opts.log },
    );
  }

  /**
   * The probe and breaker of each backend of `u`, as its config asks. Backends in `fresh` were
   * added while the daemon runs: with a health check, each is published unhealthy until its
   * first probe passes (no request reaches a backend nobody has checked).
   */
  #backendActors(u: UpstreamConfig, fresh: ReadonlySet<string> = new Set()): BackendActorSpec[] {
    const out: BackendActorSpec[] = [];
    const { table, slotOf } = this.#opts;
    for (const b of u.backends) {
      const slot = slotOf(u.name, b.address);
      const hc = u.healthCheck;
      if (hc.enabled) {
        const id = `probe:${u.name}/${b.address}`;
        const settings = { type: hc.type, path: hc.path, intervalMs: hc.interval, timeoutMs: hc.timeout, unhealthyThreshold: hc.unhealthyThreshold, healthyThreshold: hc.healthyThreshold, tls: u.tls, sendProxyProtocol: u.sendProxyProtocol };
        // Only the first incarnation of a fresh backend's probe: a restarted probe keeps the table's verdict.
        let pending = fresh.has(b.address);
        out.push({
          id,
          fingerprint: JSON.stringify({ slot, ...settings }),
          spec: {
            id,
            restart: 'permanent',
            shutdown: 1_000,
            start: ({ id: actorId, parent, log }) => {
              if (pending) table.backendSet(slot, B.HEALTHY, 0);
              const input = { ...settings, pending, tls: probeTls(u.tls), table, slot, backend: b.address, host: b.host, port: b.port, log: log.child({ actorId, actorType: 'healthProbe', upstream: u.name }) };
              pending = false;
              return new MachineActor({
                id: actorId,
                type: 'healthProbe',
                logic: healthProbeMachine,
                parent,
                log,
                input,
                describe: ({ context: c }) => ({ backend: b.address, passes: c.passes, fails: c.fails, ...(c.lastError && { lastError: c.lastError }) }),
              }).start();
            },
          },
        });
      }
      const cb = u.circuitBreaker;
      if (cb.enabled) {
        const id = `breaker:${u.name}/${b.address}`;
        const settings = { failureThreshold: cb.failureThreshold, successThreshold: cb.successThreshold, openForMs: cb.openFor, trialTimeoutMs: u.connectTimeout + 1_000 };
        out.push({
          id,
          fingerprint: JSON.stringify({ slot, ...settings }),
          spec: {
            id,
            restart: 'permanent',
            shutdown: 1_000,
            start: ({ id: actorId, parent, log }) => {
              const a = new MachineActor({
                id: actorId,
                type: 'breaker',
                logic: breakerMachine,
                parent,
                log,
                input: { ...settings, table, slot, backend: b.address, log: log.child({ actorId, actorType: 'breaker', upstream: u.name }) },
                describe: () => ({ backend: b.address, failures: table.backendGet(slot, B.FAILS) }),
              });
              this.breakers.register(a, slot);
              return a.start();
            },
          },
        });
      }
    }
    return out;
  }

  /**
   * Moves the subtree from `prev` to `next`: upstreams removed or added are stopped or started
   * whole; within a kept upstream, the actors of removed backends stop (their DOWN cleans the
   * breaker index), actors whose settings changed restart (the verdicts stay in the state table),
   * and new backends get theirs. A backend whose probe or breaker was switched off is published
   * healthy, or closed.
   *
   * New backends are warmed (Envoy's "warm, then swap"): they are published unhealthy, and this
   * resolves once each one's first probe has answered (or its probe timeout passed), so that the
   * shards, which get the new config next, find them healthy or not, never unchecked.
   */
  async apply(prev: UpstreamConfig[], next: UpstreamConfig[]): Promise<void> {
    const sup = this.#supervisor;
    if (!sup || sup.status === 'exited') return;
    const { table, slotOf } = this.#opts;
    const warming: Promise<void>[] = [];
    const warm = (parent: Supervisor | undefined, u: UpstreamConfig, fresh: ReadonlySet<string>): void => {
      if (!u.healthCheck.enabled) return;
      for (const address of fresh) warming.push(firstVerdict(parent?.child(`probe:${u.name}/${address}`), u.healthCheck.timeout + 250));
    };
    for (const u of prev) if (!next.some((x) => x.name === u.name)) await sup.removeChild(`upstream:${u.name}`);
    for (const u of next) {
      const old = prev.find((x) => x.name === u.name);
      const child = sup.child(`upstream:${u.name}`) as Supervisor | undefined;
      // Backends new to the running daemon are probed before they take traffic.
      const fresh = new Set(u.backends.filter((b) => !old?.backends.some((x) => x.address === b.address)).map((b) => b.address));
      if (!old || !child) {
        if (child) await sup.removeChild(child.id);
        warm((await sup.startChild(this.#upstreamChild(u, fresh))) as Supervisor | undefined, u, fresh);
        continue;
      }
      const before = new Map(this.#backendActors(old).map((a) => [a.id, a]));
      const after = new Map(this.#backendActors(u, fresh).map((a) => [a.id, a]));
      for (const [id, a] of before) {
        const now = after.get(id);
        if (now && now.fingerprint === a.fingerprint) continue;
        await child.removeChild(id);
      }
      for (const [id, a] of after) {
        const was = before.get(id);
        if (was && was.fingerprint === a.fingerprint) continue;
        await child.startChild(a.spec);
      }
      warm(child, u, fresh);
      // Switched off on a backend that stays: publish the neutral verdict.
      for (const b of u.backends) {
        if (!old.backends.some((x) => x.address === b.address)) continue;
        const slot = slotOf(u.name, b.address);
        if (old.healthCheck.enabled && !u.healthCheck.enabled) table.backendSet(slot, B.HEALTHY, 1);
        if (old.circuitBreaker.enabled && !u.circuitBreaker.enabled) {
          table.backendSet(slot, B.BREAKER, BREAKER.CLOSED);
          table.backendSet(slot, B.PERMIT, 0);
          table.backendSet(slot, B.FAILS, 0);
        }
      }
    }
    await Promise.all(warming);
  }
}

/** Resolves when a fresh backend's probe has its first result, it stops, or `timeoutMs` passed. */
function firstVerdict(probe: Actor | undefined, timeoutMs: number): Promise<void> {
  if (!(probe instanceof MachineActor) || probe.status === 'exited') return Promise.resolve();
  if ((probe.ref.getSnapshot() as { context?: { pending?: boolean } }).context?.pending === false) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      sub.unsubscribe();
      demonitor();
      resolve();
    };
    const timer = setTimeout(done, timeoutMs);
    const demonitor = probe.monitor(done);
    const sub = probe.ref.subscribe((snap: { context?: { pending?: boolean } }) => {
      if (snap.context?.pending === false) queueMicrotask(done);
    });
  });
}

/**
 * Upstream `tls` for a probe. Each probe uses the files' contents the TLS manager has in use for
 * this `tls` (renewed files that passed their check, src/tls/upstream-files.ts); until it has
 * them (a probe started by a reload before the manager read the new config), the files as
 * they are now (`gatehouse check` and the reload read them already).
 */
function probeTls(t: UpstreamTlsConfig | undefined): ProbeTarget['tls'] {
  if (t === undefined) return undefined;
  const read = (f: string | undefined) => (f === undefined ? undefined : readFileSync(f, 'utf8'));
  let fallback: { caPem?: string; certPem?: string; keyPem?: string } | undefined;
  const now = () => currentUpstreamTls(t) ?? (fallback ??= { caPem: read(t.ca), certPem: read(t.cert), keyPem: read(t.key) });
  return {
    get caPem() {
      return now().caPem;
    },
    get certPem() {
      return now().certPem;
    },
    get keyPem() {
      return now().keyPem;
    },
    serverName: t.serverName,
    verify: t.verify,
  };
}
