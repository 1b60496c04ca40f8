/**
 * Child specs as data (OTP `supervisor:child_spec()`), their validation, and the spec helper for
 * machine children. The engine that runs them is `supervisor.ts`.
 */
import type { AnyActorLogic, InputFrom } from 'xstate';
import type { Logger } from 'pino';
import type { Actor, ShutdownSpec } from '../runtime/actor.ts';
import { MachineActor } from '../runtime/machine-actor.ts';
import { SupervisorSpecError } from '../errors.ts';
import type { Supervisor } from './supervisor.ts';

export type RestartType = 'permanent' | 'transient' | 'temporary';
export type Strategy = 'one_for_one' | 'one_for_all' | 'rest_for_one';

/** What a child's `start` receives. `log` carries no actor bindings: the child adds its own. */
export interface StartContext {
  id: string;
  parent: Supervisor;
  restarts: number;
  log: Logger;
}

/**
 * A child, as data (OTP's child spec). `start` returns a started actor (or a promise of one);
 * its failure is a failed start. Sub-supervisors get `shutdown: 'infinity'` by default.
 */
export interface ChildSpec {
  id: string;
  start: (ctx: StartContext) => Actor | Promise<Actor>;
  /** permanent (default): always restarted; transient: only after an abnormal exit; temporary: never. */
  restart?: RestartType;
  /** ms to stop cleanly before being killed (default 5000), `'brutal'` or `'infinity'`. */
  shutdown?: ShutdownSpec | (() => ShutdownSpec);
  /** True for a child that is itself a supervisor (default shutdown becomes `'infinity'`). */
  supervisor?: boolean;
  /**
   * This child's own restart intensity (only under `one_for_one`). Its restarts do not count
   * toward the supervisor's: past `maxRestarts` within `periodMs` this child alone gives up and
   * stays listed as `failed`, and its siblings and the supervisor go on. A failed start of such a
   * child is a crash like any other (restarted and counted), never a failed supervisor start.
   * Not in OTP, where one child's crash loop takes down its whole supervisor.
   */
  intensity?: { maxRestarts: number; periodMs: number };
  /** The type shown in the tree while the child has no actor (a failed child). */
  type?: string;
}

export interface SupervisorSpec {
  id: string;
  type?: string;
  strategy?: Strategy;
  /** Most restarts allowed within `periodMs` (OTP intensity; default 1). */
  maxRestarts?: number;
  /** The window for `maxRestarts`, in ms (OTP period; default 5000). */
  periodMs?: number;
  children: ChildSpec[];
}

const RESTARTS: readonly RestartType[] = ['permanent', 'transient', 'temporary'];
const STRATEGIES: readonly Strategy[] = ['one_for_one', 'one_for_all', 'rest_for_one'];

/** Checks a supervisor spec before anything starts (OTP `check_childspecs`); throws `GH_ERR_SUPERVISOR_SPEC` naming the bad key. */
export function checkSupervisorSpec(spec: SupervisorSpec): void {
  if (!spec || typeof spec !== 'object') throw new SupervisorSpecError('(unnamed)', 'spec', 'must be an object');
  const name = typeof spec.id === 'string' && spec.id ? spec.id : '(unnamed)';
  if (!spec.id || typeof spec.id !== 'string') throw new SupervisorSpecError(name, 'id', 'must be a non-empty string');
  if (spec.strategy !== undefined && !STRATEGIES.includes(spec.strategy)) {
    throw new SupervisorSpecError(name, 'strategy', `must be one of ${STRATEGIES.join(', ')}`);
  }
  if (spec.maxRestarts !== undefined && !(Number.isInteger(spec.maxRestarts) && spec.maxRestarts >= 0)) {
    throw new SupervisorSpecError(name, 'maxRestarts', 'must be an integer >= 0');
  }
  if (spec.periodMs !== undefined && !(spec.periodMs > 0)) throw new SupervisorSpecError(name, 'periodMs', 'must be > 0');
  if (!Array.isArray(spec.children)) throw new SupervisorSpecError(name, 'children', 'must be an array');
  const seen = new Set<string>();
  spec.children.forEach((c, i) => {
    checkChildSpec(name, c, i, seen);
    checkIsolation(name, spec.strategy ?? 'one_for_one', c, i);
  });
}

/** A child with its own intensity restarts alone: a strategy that restarts siblings with it would share its crash loop. */
export function checkIsolation(name: string, strategy: Strategy, c: ChildSpec, i: number | string): void {
  if (c.intensity !== undefined && strategy !== 'one_for_one') {
    throw new SupervisorSpecError(name, `children.${i}.intensity`, 'needs strategy one_for_one');
  }
}

/** Checks one child spec; `seen` collects ids to reject duplicates. */
export function checkChildSpec(name: string, c: ChildSpec, i: number | string, seen: Set<string>): void {
  if (!c || typeof c.id !== 'string' || !c.id) throw new SupervisorSpecError(name, `children.${i}.id`, 'must be a non-empty string');
  if (seen.has(c.id)) throw new SupervisorSpecError(name, `children.${i}.id`, `duplicate child id ${c.id}`);
  seen.add(c.id);
  if (typeof c.start !== 'function') throw new SupervisorSpecError(name, `children.${i}.start`, 'must be a function');
  if (c.restart !== undefined && !RESTARTS.includes(c.restart)) {
    throw new SupervisorSpecError(name, `children.${i}.restart`, `must be one of ${RESTARTS.join(', ')}`);
  }
  const w = c.intensity;
  if (w !== undefined && !(w && Number.isInteger(w.maxRestarts) && w.maxRestarts >= 0 && w.periodMs > 0)) {
    throw new SupervisorSpecError(name, `children.${i}.intensity`, 'must be { maxRestarts: integer >= 0, periodMs: > 0 }');
  }
  const s = c.shutdown;
  if (typeof s !== 'function' && s !== undefined && s !== 'brutal' && s !== 'infinity' && !(typeof s === 'number' && s >= 0 && Number.isFinite(s))) {
    throw new SupervisorSpecError(name, `children.${i}.shutdown`, "must be a number of ms >= 0, 'brutal' or 'infinity'");
  }
}

/**
 * A child spec for an xstate machine run as a full actor.
 *
 * @example
 * machineChild({ id: 'probe:a', type: 'healthProbe', logic: probeMachine, input: { port }, restart: 'transient' })
 */
export function machineChild<L extends AnyActorLogic>(o: {
  id: string;
  type?: string;
  logic: L;
  input?: InputFrom<L>;
  restart?: RestartType;
  shutdown?: ShutdownSpec;
}): ChildSpec {
  return {
    id: o.id,
    restart: o.restart,
    shutdown: o.shutdown,
    start: ({ id, parent, log }) => {
      const type = o.type ?? 'machine';
      return new MachineActor({ id, type, logic: o.logic, input: o.input, parent, log: log.child({ actorId: id, actorType: type }) }).start();
    },
  };
}
