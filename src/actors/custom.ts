import { AsyncLocalStorage } from 'node:async_hooks';
import { statSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import type { AnyActorLogic } from 'xstate';
import { Observable } from 'rxjs';
import type { Logger } from 'pino';
import { MachineActor } from '../runtime/machine-actor.ts';
import type { ChildSpec } from '../supervisors/supervisor.ts';
import { ActorModuleError } from '../errors.ts';
import type { ActorEvent } from '../runtime/events.ts';
import type { ActorConfig } from '../config/types.ts';

/** A gateway event, as custom actors observe them on `ctx.events$`. */
export type GatewayEvent =
  | { type: 'actor.spawned'; id: string; actorType: string; shard?: number }
  | { type: 'actor.down'; id: string; actorType: string; reason: string; shard?: number }
  | { type: 'actor.restart'; id: string; actorType: string; supervisor: string; shard?: number }
  | { type: 'connection.opened'; id: string; shard?: number }
  | { type: 'connection.closed'; id: string; reason: string; shard?: number }
  | { type: 'config.reloaded'; added: string[]; removed: string[]; changed: string[] };

/** What a custom actor's `logic` receives. */
export interface ActorContext<O = Record<string, unknown>> {
  /** A pino child logger bound to this actor (`actorId`, `actorType`). */
  log: Logger;
  /** The `options` of its entry in the config's `actors:` list. */
  options: O;
  /** Gateway events. Subscribing turns on event forwarding from shards; unsubscribe when done. */
  events$: Observable<GatewayEvent>;
}

export interface ActorDefinition<O = Record<string, unknown>> {
  readonly kind: 'gatehouse.actor';
  readonly name: string;
  logic(ctx: ActorContext<O>): AnyActorLogic;
}

/**
 * Defines a custom actor: the default export of a module listed in the config's `actors:`.
 * `logic` returns xstate actor logic (a machine, `fromCallback`, `fromPromise`, ...); Gatehouse
 * runs it under the root supervisor with the entry's restart type. Whatever the logic acquires it
 * releases in its own cleanup (the disposer of `fromCallback`, the `signal` of `fromPromise`).
 *
 * @example
 * export default defineActor({
 *   name: 'audit',
 *   logic: (ctx) => fromCallback(() => {
 *     const sub = ctx.events$.subscribe((e) => ctx.log.info({ e }, 'gateway event'));
 *     return () => sub.unsubscribe();
 *   }),
 * });
 */
export function defineActor<O = Record<string, unknown>>(def: { name: string; logic(ctx: ActorContext<O>): AnyActorLogic }): ActorDefinition<O> {
  if (!def || typeof def.name !== 'string' || !def.name) throw new TypeError('defineActor: name must be a non-empty string');
  if (typeof def.logic !== 'function') throw new TypeError('defineActor: logic must be a function (ctx) => actor logic');
  return Object.freeze({ kind: 'gatehouse.actor' as const, name: def.name, logic: def.logic });
}

/**
 * The version of an actor's code as a reload sees it: the module file's modification time (a
 * package name has one version for the life of the process).
 */
export function moduleVersion(cfg: ActorConfig): string {
  try {
    return cfg.module.startsWith('/') ? String(statSync(cfg.module).mtimeMs) : 'package';
  } catch {
    return 'missing';
  }
}

/** Imports a custom actor module and checks its default export. Throws `GH_ERR_ACTOR_MODULE`. */
export async function loadActorModule(cfg: ActorConfig): Promise<ActorDefinition> {
  let mod: { default?: unknown };
  try {
    // A file's modification time versions its URL: a reload after an edit imports the new code
    // (Node caches a module per URL for the life of the process).
    const spec = cfg.module.startsWith('/') ? `${pathToFileURL(cfg.module).href}?mtime=${moduleVersion(cfg)}` : cfg.module;
    mod = (await import(spec)) as { default?: unknown };
  } catch (err) {
    throw new ActorModuleError(cfg.name, cfg.moduleSpecifier, `cannot be imported: ${(err as Error).message}`, { cause: err });
  }
  const def = mod.default as ActorDefinition | undefined;
  if (!def || def.kind !== 'gatehouse.actor') {
    throw new ActorModuleError(cfg.name, cfg.moduleSpecifier, 'its default export must be made with defineActor({ name, logic })');
  }
  return def;
}

/** The incarnation whose code is running: every callback its code schedules carries it. */
interface Owner {
  actor: MachineActor | undefined;
}

// AsyncLocalStorage follows a custom actor's timers, sockets and promises, so that an error
// thrown from any of them (an uncaught exception of the process) is known to be that actor's.
const owners = new AsyncLocalStorage<Owner>();

/**
 * The child spec of a custom actor (`actor:<name>`), run as a full xstate actor with its own
 * restart intensity (the entry's `maxRestarts` in `period`): a throw from `logic`, from the
 * machine's start, or from any callback its code scheduled later is a crash of this actor.
 */
export function customActorChild(cfg: ActorConfig, def: ActorDefinition, events$: Observable<GatewayEvent>): ChildSpec {
  return {
    id: `actor:${cfg.name}`,
    type: def.name,
    restart: cfg.restart,
    intensity: { maxRestarts: cfg.maxRestarts, periodMs: cfg.period },
    shutdown: 5_000,
    start: ({ id, log }) => {
      const owner: Owner = { actor: undefined };
      return owners.run(owner, () => {
        const alog = log.child({ actorId: id, actorType: def.name });
        const logic = def.logic({ log: alog, options: cfg.options, events$: ownedBy(owner, events$) });
        owner.actor = new MachineActor({ id, type: def.name, logic, log: alog });
        return owner.actor.start();
      });
    },
  };
}

/** Gateway events delivered inside the actor's scope: a throw in its subscriber is its own crash. */
function ownedBy(owner: Owner, events$: Observable<GatewayEvent>): Observable<GatewayEvent> {
  return new Observable<GatewayEvent>((sub) =>
    events$.subscribe({
      next: (e) => owners.run(owner, () => sub.next(e)),
      error: (err: unknown) => sub.error(err),
      complete: () => sub.complete(),
    }),
  );
}

/**
 * For the process's `uncaughtException` and `unhandledRejection` handlers: when the error was
 * thrown by a custom actor's code, that actor crashes (its supervisor restarts it) and the
 * process goes on. `crashed`: the live actor was crashed; `stale`: it came from an incarnation
 * already gone (a timer it left behind); `undefined`: not a custom actor's error.
 *
 * @example
 * process.on('uncaughtException', (err) => { if (!crashCustomActor(err)) process.exit(70); });
 */
export function crashCustomActor(err: unknown): { actorId: string; outcome: 'crashed' | 'stale' } | undefined {
  const actor = owners.getStore()?.actor;
  if (!actor) return undefined;
  return { actorId: actor.id, outcome: actor.crash(err) ? 'crashed' : 'stale' };
}

/** The gateway event custom actors see for an actor lifecycle event, if any. */
export function toGatewayEvent(e: ActorEvent & { shard?: number }): GatewayEvent | undefined {
  if (e.actorType === 'connection') {
    if (e.type === 'spawned') return { type: 'connection.opened', id: e.id, shard: e.shard };
    if (e.type === 'down') return { type: 'connection.closed', id: e.id, reason: e.reason, shard: e.shard };
    return undefined;
  }
  if (e.type === 'spawned') return { type: 'actor.spawned', id: e.id, actorType: e.actorType, shard: e.shard };
  if (e.type === 'down') return { type: 'actor.down', id: e.id, actorType: e.actorType, reason: e.reason, shard: e.shard };
  if (e.type === 'restart') return { type: 'actor.restart', id: e.id, actorType: e.actorType, supervisor: e.supervisor, shard: e.shard };
  return undefined;
}
