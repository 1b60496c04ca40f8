import { Subject, type Observable } from 'rxjs';
import type { Logger } from 'pino';
import { Supervisor, supervisorChild, type ChildSpec } from '../supervisors/supervisor.ts';
import { MachineActor } from '../runtime/machine-actor.ts';
import { Registry } from '../runtime/registry.ts';
import type { Down } from '../runtime/actor.ts';
import { GatehouseError } from '../errors.ts';
import { serviceMachine, type ServiceEvent } from './service-machine.ts';
import type { Registration, ServiceInstance } from './service.ts';

/** A change of the registry, as `GET /v1/services/events` streams it. */
export interface RegistryEvent {
  type: 'registered' | 'updated' | 'deregistered' | 'expired';
  service: ServiceInstance;
}

/** The registry holds as many instances as it may: one more is refused. */
export class RegistryFullError extends GatehouseError {
  readonly code = 'GH_ERR_REGISTRY_FULL';
  constructor(max: number) {
    super(`the service registry is full (${max} instances)`);
    this.name = 'RegistryFullError';
  }
}

/** The registry is not running (starting, or the daemon is stopping). */
export class RegistryDownError extends GatehouseError {
  readonly code = 'GH_ERR_REGISTRY_DOWN';
  constructor() {
    super('the service registry is not running');
    this.name = 'RegistryDownError';
  }
}

export interface ServiceRegistryOptions {
  log: Logger;
  /** Most instances held at once (default 10,000). */
  maxInstances?: number;
}

/** What an instance's actor is registered under: its current registration and when it was made (epoch ms). */
interface Held {
  registration: Registration;
  stamp: number;
}

/** An instance as the cluster sync reads and writes it: epoch ms, `expiresAt` 0 for never. */
export interface RegistryEntry {
  registration: Registration;
  expiresAt: number;
  /** When this registration was made (the merge after a Redis outage keeps the later one). */
  stamp: number;
}

/** A change made on this instance alone (cluster mode while Redis is away), to push later. */
export type LocalChange = { kind: 'put' | 'heartbeat'; id: string } | { kind: 'delete'; id: string; at: number } | { kind: 'expired'; id: string };

/**
 * What shares the registry between instances (src/cluster/registry.ts). While {@link active},
 * register, heartbeat and deregister go through it (it applies them here as well, through
 * {@link ServiceRegistry.applyPut} and {@link ServiceRegistry.applyRemove}); its operations throw
 * {@link SharedUnavailableError} when they could not be shared, and the registry then does them
 * locally and reports them with {@link local}.
 */
export interface SharedRegistry {
  readonly active: boolean;
  register(registration: Registration): Promise<{ created: boolean; service: ServiceInstance }>;
  heartbeat(id: string): Promise<ServiceInstance | undefined>;
  deregister(id: string): Promise<boolean>;
  local(change: LocalChange): void;
  /** The registry's supervisor (re)started, empty. */
  resume(): void;
}

/** A shared operation did not go through (Redis away or slow): do it locally. */
export class SharedUnavailableError extends GatehouseError {
  readonly code = 'GH_ERR_REGISTRY_UNSHARED';
  constructor(cause: unknown) {
    super(`the shared registry is unavailable: ${(cause as Error)?.message ?? String(cause)}`, { cause });
    this.name = 'SharedUnavailableError';
  }
}

const actorId = (id: string): string => `service:${id}`;

/**
 * The service registry (Consul's agent catalogue, as actors): `registry` (one_for_one) holds one
 * `service:ID` actor per instance (`serviceMachine`, with its TTL timer). Instances are indexed
 * by id and by name in a {@link Registry}, which their DOWN cleans: an expired, deregistered or
 * crashed instance leaves no entry behind, and the supervisor's spec for it is deleted.
 *
 * Operations run one at a time, in call order (a register right after an expiry of the same id
 * finds the old actor gone). `changes$` fires after every change of membership or content, for
 * discovery; `events$` carries what the admin API streams.
 *
 * @example
 * const reg = new ServiceRegistry({ log });
 * root.children.push(reg.child());
 * await reg.register(parseRegistration({ name: 'app', address: '127.0.0.1:9001', ttl: '10s' }));
 * reg.list('app'); // [ { id: 'app-…', name: 'app', address: '127.0.0.1:9001', ... } ]
 */
export class ServiceRegistry {
  readonly #opts: ServiceRegistryOptions;
  readonly #log: Logger;
  readonly #index = new Registry<Held>('services', { name: (h) => h.registration.name });
  readonly #events = new Subject<RegistryEvent>();
  readonly #changes = new Subject<void>();
  #supervisor: Supervisor | undefined;
  #shared: SharedRegistry | undefined;
  /** How late the actors' own TTL timers fire (cluster mode while Redis is up: Redis expires first). */
  #slack = 0;
  #queue: Promise<unknown> = Promise.resolve();
  readonly events$: Observable<RegistryEvent> = this.#events.asObservable();
  /** Fires after any change (also a loss: the registry's supervisor restarted). */
  readonly changes$: Observable<void> = this.#changes.asObservable();

  constructor(opts: ServiceRegistryOptions) {
    this.#opts = opts;
    this.#log = opts.log.child({ actorId: 'registry', actorType: 'supervisor' });
  }

  /** The `registry` supervisor's child spec (empty at each start: registrations are not persisted). */
  child(): ChildSpec {
    const spec = supervisorChild({ id: 'registry', type: 'registry', strategy: 'one_for_one', maxRestarts: 20, periodMs: 10_000, children: [] }, { log: this.#opts.log });
    return {
      ...spec,
      start: async (ctx) => {
        const sup = (await spec.start(ctx)) as Supervisor;
        this.#supervisor = sup;
        this.#shared?.resume();
        sup.monitor(() => {
          if (this.#supervisor === sup) this.#supervisor = undefined;
        });
        return sup;
      },
    };
  }

  /** Live instances, of one service name or all, in registration order. */
  list(name?: string): ServiceInstance[] {
    const out: ServiceInstance[] = [];
    if (name !== undefined) {
      for (const { actor } of this.#index.lookup('name', name)) out.push(this.#view(actor as MachineActor));
    } else {
      this.#index.forEach((_v, actor) => void out.push(this.#view(actor as MachineActor)));
    }
    return out;
  }

  get(id: string): ServiceInstance | undefined {
    const e = this.#index.get(actorId(id));
    return e && this.#view(e.actor as MachineActor);
  }

  /** Most instances held at once. */
  get maxInstances(): number {
    return this.#opts.maxInstances ?? 10_000;
  }

  get size(): number {
    return this.#index.size;
  }

  /**
   * Registers an instance, or replaces the one with its id (`created: false`; its TTL restarts).
   * Rejects with {@link RegistryFullError} or {@link RegistryDownError}.
   */
  async register(registration: Registration): Promise<{ created: boolean; service: ServiceInstance }> {
    const shared = await this.#tryShared((s) => s.register(registration));
    if (shared) return shared.value;
    const res = await this.#serial(() => this.#put({ registration, expiresAt: undefined, stamp: Date.now() }));
    this.#shared?.local({ kind: 'put', id: registration.id });
    return { created: res.created, service: res.service };
  }

  /** Restarts an instance's TTL. Undefined when no such instance. */
  async heartbeat(id: string): Promise<ServiceInstance | undefined> {
    const shared = await this.#tryShared((s) => s.heartbeat(id));
    if (shared) return shared.value;
    const res = await this.#serial(async () => {
      const e = this.#index.get(actorId(id));
      if (!e) return undefined;
      (e.actor as MachineActor).send({ type: 'heartbeat' } satisfies ServiceEvent);
      return this.#view(e.actor as MachineActor);
    });
    if (res) this.#shared?.local({ kind: 'heartbeat', id });
    return res;
  }

  /** Removes an instance. False when no such instance. */
  async deregister(id: string): Promise<boolean> {
    const shared = await this.#tryShared((s) => s.deregister(id));
    if (shared) return shared.value;
    const removed = await this.#serial(() => this.#remove(id, 'deregistered'));
    if (removed) this.#shared?.local({ kind: 'delete', id, at: Date.now() });
    return removed;
  }

  /**
   * Cluster mode: `shared` takes the operations while it is active (undefined: all local again).
   * @example registry.share(new ClusterRegistry({ cluster, registry, log }));
   */
  share(shared: SharedRegistry | undefined): void {
    this.#shared = shared;
  }

  /** Sets how late the actors' own TTL timers fire after their `expiresAt` (0: on time). */
  setExpirySlack(ms: number): void {
    if (ms === this.#slack) return;
    this.#slack = ms;
    this.#index.forEach((_v, actor) => (actor as MachineActor).send({ type: 'slack', ms } satisfies ServiceEvent));
  }

  /** Every instance with its expiry and stamp (for the cluster sync). */
  entries(): RegistryEntry[] {
    const out: RegistryEntry[] = [];
    this.#index.forEach((held, actor) => void out.push({ registration: held.registration, expiresAt: this.#context(actor as MachineActor).expiresAt, stamp: held.stamp }));
    return out;
  }

  /**
   * Applies an instance as the shared store holds it: registers it (`registered`), replaces it
   * (`updated`, unless `quiet` and only its expiry changed) or moves its expiry (a heartbeat:
   * no event).
   */
  applyPut(entry: RegistryEntry, opts: { heartbeat?: boolean; quiet?: boolean } = {}): Promise<void> {
    return this.#serial(async () => {
      const held = this.#index.get(actorId(entry.registration.id));
      const same = held !== undefined && JSON.stringify((held.value as Held).registration) === JSON.stringify(entry.registration);
      if (held && (opts.heartbeat || (opts.quiet && same))) {
        (held.value as Held).stamp = Math.max((held.value as Held).stamp, entry.stamp);
        (held.actor as MachineActor).send({ type: 'heartbeat', expiresAt: entry.expiresAt } satisfies ServiceEvent);
        return;
      }
      if (!held && opts.heartbeat) return;
      await this.#put(entry);
    });
  }

  /** Removes an instance as the shared store did (`deregistered` or `expired`); false when it was not here. */
  applyRemove(id: string, type: 'deregistered' | 'expired'): Promise<boolean> {
    return this.#serial(() => this.#remove(id, type));
  }

  /** Runs `op` on the shared registry while it is active; undefined: do it locally. */
  async #tryShared<T>(op: (s: SharedRegistry) => Promise<T>): Promise<{ value: T } | undefined> {
    const shared = this.#shared;
    if (!shared?.active) return undefined;
    try {
      return { value: await op(shared) };
    } catch (err) {
      if (!(err instanceof SharedUnavailableError)) throw err;
      this.#log.warn({ err: err.message }, 'service registry: Redis unavailable, change made on this instance only (pushed when Redis is back)');
      return undefined;
    }
  }

  /** Registers or replaces (in the queue). `expiresAt` undefined: now + ttl. */
  async #put(entry: { registration: Registration; expiresAt: number | undefined; stamp: number }): Promise<{ created: boolean; service: ServiceInstance }> {
    const sup = this.#running();
    const { registration, expiresAt, stamp } = entry;
    const held = this.#index.get(actorId(registration.id));
    if (held) {
      Object.assign(held.value as Held, { registration, stamp });
      (held.actor as MachineActor).send({ type: 'update', registration, expiresAt } satisfies ServiceEvent);
      const service = this.#view(held.actor as MachineActor);
      this.#publish('updated', service);
      return { created: false, service };
    }
    const max = this.maxInstances;
    if (this.#index.size >= max) throw new RegistryFullError(max);
    // The spec of an earlier incarnation that expired a moment ago may still be there.
    await sup.removeChild(actorId(registration.id));
    const actor = (await sup.startChild(this.#spec({ registration, stamp }, expiresAt))) as MachineActor;
    const service = this.#view(actor);
    this.#log.info({ service: service.name, id: service.id, address: service.address, ttl: service.ttl }, 'service registered');
    this.#publish('registered', service);
    return { created: true, service };
  }

  /** Ends an instance as deregistered or expired (in the queue); false when no such instance. */
  async #remove(id: string, type: 'deregistered' | 'expired'): Promise<boolean> {
    const e = this.#index.get(actorId(id));
    if (!e) return false;
    if (type === 'expired') {
      // Its DOWN publishes `expired` and removes the spec, as for its own timer.
      (e.actor as MachineActor).send({ type: 'expire' } satisfies ServiceEvent);
      await e.actor.exited();
      return true;
    }
    const service = this.#view(e.actor as MachineActor);
    (e.actor as MachineActor).send({ type: 'deregister' } satisfies ServiceEvent);
    await e.actor.exited();
    await this.#supervisor?.removeChild(e.actor.id);
    this.#log.info({ service: service.name, id: service.id }, 'service deregistered');
    this.#publish('deregistered', service);
    return true;
  }

  #running(): Supervisor {
    const sup = this.#supervisor;
    if (!sup || sup.status !== 'running') throw new RegistryDownError();
    return sup;
  }

  #serial<T>(work: () => Promise<T>): Promise<T> {
    const p = this.#queue.then(work);
    this.#queue = p.catch(() => {});
    return p;
  }

  #publish(type: RegistryEvent['type'], service: ServiceInstance): void {
    this.#events.next({ type, service });
    this.#changes.next();
  }

  /** An instance's child spec: transient, so a crash restarts it with its latest registration and a fresh TTL. */
  #spec(held: Held, expiresAt?: number): ChildSpec {
    const id = actorId(held.registration.id);
    return {
      id,
      type: 'service',
      restart: 'transient',
      shutdown: 1_000,
      start: ({ parent, log }) => {
        // The first start takes the given expiry; a restart after a crash a fresh TTL.
        const input = { registration: held.registration, expiresAt, slack: this.#slack };
        expiresAt = undefined;
        const a = new MachineActor({ id, type: 'service', logic: serviceMachine, parent, log, input });
        this.#index.register(a, held);
        a.monitor((down) => this.#onDown(a, held, down));
        return a.start();
      },
    };
  }

  #onDown(a: MachineActor, held: Held, down: Down): void {
    const sup = this.#supervisor;
    if (down.reason !== 'normal') {
      // A crash (the supervisor restarts it in place) or a stop: discovery looks again.
      if (down.reason === 'error') this.#log.warn({ id: held.registration.id, err: down.error }, 'service instance actor crashed; restarted with its registration');
      this.#changes.next();
      return;
    }
    if (a.state !== 'expired') return; // deregistered: deregister() publishes and removes the spec
    const service = { ...this.#view(a), expiresAt: new Date().toISOString() };
    this.#log.warn({ service: service.name, id: service.id, address: service.address, ttl: service.ttl }, 'service expired: no heartbeat within its ttl');
    this.#shared?.local({ kind: 'expired', id: service.id });
    void this.#serial(async () => {
      // Only the spec of this incarnation: a re-registration queued before ran already and replaced it.
      if (sup && sup.status === 'running' && !this.#index.has(a.id)) await sup.removeChild(a.id);
    });
    this.#publish('expired', service);
  }

  #context(a: MachineActor): { registration: Registration; expiresAt: number } {
    return (a.ref.getSnapshot() as { context: { registration: Registration; expiresAt: number } }).context;
  }

  #view(a: MachineActor): ServiceInstance {
    const ctx = this.#context(a);
    const r = ctx.registration;
    return { id: r.id, name: r.name, address: r.address, host: r.host, port: r.port, tags: [...r.tags], metadata: { ...r.metadata }, ttl: r.ttl, expiresAt: ctx.expiresAt > 0 ? new Date(ctx.expiresAt).toISOString() : null };
  }

  /** Completes the streams (the daemon stopped). */
  close(): void {
    this.#events.complete();
    this.#changes.complete();
  }
}
