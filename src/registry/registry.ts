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

/** What an instance's actor is registered under: its current registration. */
interface Held {
  registration: Registration;
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

  get size(): number {
    return this.#index.size;
  }

  /**
   * Registers an instance, or replaces the one with its id (`created: false`; its TTL restarts).
   * Rejects with {@link RegistryFullError} or {@link RegistryDownError}.
   */
  register(registration: Registration): Promise<{ created: boolean; service: ServiceInstance }> {
    return this.#serial(async () => {
      const sup = this.#running();
      const held = this.#index.get(actorId(registration.id));
      if (held) {
        (held.value as Held).registration = registration;
        (held.actor as MachineActor).send({ type: 'update', registration } satisfies ServiceEvent);
        const service = this.#view(held.actor as MachineActor);
        this.#publish('updated', service);
        return { created: false, service };
      }
      const max = this.#opts.maxInstances ?? 10_000;
      if (this.#index.size >= max) throw new RegistryFullError(max);
      // The spec of an earlier incarnation that expired a moment ago may still be there.
      await sup.removeChild(actorId(registration.id));
      const actor = (await sup.startChild(this.#spec({ registration }))) as MachineActor;
      const service = this.#view(actor);
      this.#log.info({ service: service.name, id: service.id, address: service.address, ttl: service.ttl }, 'service registered');
      this.#publish('registered', service);
      return { created: true, service };
    });
  }

  /** Restarts an instance's TTL. False when no such instance. */
  heartbeat(id: string): Promise<ServiceInstance | undefined> {
    return this.#serial(async () => {
      const e = this.#index.get(actorId(id));
      if (!e) return undefined;
      (e.actor as MachineActor).send({ type: 'heartbeat' } satisfies ServiceEvent);
      return this.#view(e.actor as MachineActor);
    });
  }

  /** Removes an instance. False when no such instance. */
  deregister(id: string): Promise<boolean> {
    return this.#serial(async () => {
      const e = this.#index.get(actorId(id));
      if (!e) return false;
      const service = this.#view(e.actor as MachineActor);
      (e.actor as MachineActor).send({ type: 'deregister' } satisfies ServiceEvent);
      await e.actor.exited();
      await this.#supervisor?.removeChild(e.actor.id);
      this.#log.info({ service: service.name, id: service.id }, 'service deregistered');
      this.#publish('deregistered', service);
      return true;
    });
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
  #spec(held: Held): ChildSpec {
    const id = actorId(held.registration.id);
    return {
      id,
      type: 'service',
      restart: 'transient',
      shutdown: 1_000,
      start: ({ parent, log }) => {
        const a = new MachineActor({ id, type: 'service', logic: serviceMachine, parent, log, input: { registration: held.registration } });
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
    void this.#serial(async () => {
      // Only the spec of this incarnation: a re-registration queued before ran already and replaced it.
      if (sup && sup.status === 'running' && !this.#index.has(a.id)) await sup.removeChild(a.id);
    });
    this.#publish('expired', service);
  }

  #view(a: MachineActor): ServiceInstance {
    const ctx = (a.ref.getSnapshot() as { context: { registration: Registration; expiresAt: number } }).context;
    const r = ctx.registration;
    return { id: r.id, name: r.name, address: r.address, host: r.host, port: r.port, tags: [...r.tags], metadata: { ...r.metadata }, ttl: r.ttl, expiresAt: ctx.expiresAt > 0 ? new Date(ctx.expiresAt).toISOString() : null };
  }

  /** Completes the streams (the daemon stopped). */
  close(): void {
    this.#events.complete();
    this.#changes.complete();
  }
}
