/**
 * The children a supervisor holds: one slot per child spec, in spec order, with its live actor,
 * its restart count and its own intensity. Kept apart from the engine (`supervisor.ts`), which
 * decides when to start, stop and restart; this file only keeps the list and its order.
 */
import type { Actor } from '../runtime/actor.ts';
import type { Clock } from '../runtime/clock.ts';
import type { ChildSpec, Strategy } from './child-spec.ts';
import { RestartWindow, SpecOrder } from './intensity.ts';

/** One child as its supervisor holds it. */
export interface Slot {
  spec: ChildSpec;
  actor: Actor | undefined;
  restarts: number;
  /** Set while the supervisor itself stops this child, so its DOWN is not a failure. */
  stopping: boolean;
  /** The child's own intensity (`ChildSpec.intensity`); undefined: its restarts count toward the supervisor's. */
  window: RestartWindow | undefined;
  /** Gave up on its own intensity: kept listed, not restarted until started again. */
  failed: boolean;
}

/** A child as `Supervisor.whichChildren()` lists it. */
export interface ChildInfo {
  id: string;
  actor: Actor | undefined;
  restarts: number;
  failed: boolean;
}

/**
 * A supervisor's slots in start order. A child added again goes back to its place in the spec
 * order ({@link SpecOrder}); a detached one is forgotten.
 *
 * @example
 * const table = new ChildTable(spec.children, systemClock);
 * const slot = table.add(machineChild({ id: 'audit', logic: auditMachine }));
 * table.restartGroup(slot, 'rest_for_one'); // slot and every slot after it
 */
export class ChildTable {
  readonly #slots: Slot[] = [];
  readonly #order: SpecOrder;
  readonly #clock: Clock;

  constructor(specs: readonly ChildSpec[], clock: Clock) {
    this.#clock = clock;
    this.#order = new SpecOrder(specs.map((c) => c.id));
    for (const c of specs) this.#slots.push(this.#newSlot(c));
  }

  /** The slots in start order. The live list, not a copy: a loop over it sees removals as they happen. */
  get slots(): readonly Slot[] {
    return this.#slots;
  }

  /** The slot of the child with this id. */
  find(id: string): Slot | undefined {
    return this.#slots.find((s) => s.spec.id === id);
  }

  has(slot: Slot): boolean {
    return this.#slots.includes(slot);
  }

  /** The live actors, in start order. */
  actors(): Actor[] {
    const out: Actor[] = [];
    for (const s of this.#slots) if (s.actor) out.push(s.actor);
    return out;
  }

  /** Every child in start order (OTP `which_children`). */
  which(): ChildInfo[] {
    return this.#slots.map((s) => ({ id: s.spec.id, actor: s.actor, restarts: s.restarts, failed: s.failed }));
  }

  /** A new slot for `spec`, at its place in the spec order (a new id goes last). */
  add(spec: ChildSpec): Slot {
    const slot = this.#newSlot(spec);
    this.#slots.splice(this.#order.insertAt(this.#slots.map((s) => s.spec.id), spec.id), 0, slot);
    return slot;
  }

  /** Removes a slot; one already gone (a temporary child that ended meanwhile) is left alone. */
  delete(slot: Slot): void {
    const i = this.#slots.indexOf(slot);
    if (i >= 0) this.#slots.splice(i, 1);
  }

  /** Removes and returns the slot with this id; its id keeps its place in the spec order. */
  take(id: string): Slot | undefined {
    const i = this.#slots.findIndex((s) => s.spec.id === id);
    if (i < 0) return undefined;
    return this.#slots.splice(i, 1)[0];
  }

  /** Like {@link take}, and forgets the id's place: a later child of that id is a new one. */
  detach(id: string): Slot | undefined {
    const slot = this.take(id);
    if (slot) this.#order.forget(id);
    return slot;
  }

  /**
   * The slots a restart of `slot` concerns, in start order: `slot` alone (`one_for_one`), every
   * slot (`one_for_all`), or `slot` and those after it (`rest_for_one`). A copy.
   */
  restartGroup(slot: Slot, strategy: Strategy): Slot[] {
    if (strategy === 'one_for_one') return [slot];
    return strategy === 'one_for_all' ? this.#slots.slice() : this.#slots.slice(this.#slots.indexOf(slot));
  }

  #newSlot(spec: ChildSpec): Slot {
    const w = spec.intensity;
    return { spec, actor: undefined, restarts: 0, stopping: false, window: w && new RestartWindow(w.maxRestarts, w.periodMs, this.#clock), failed: false };
  }
}
