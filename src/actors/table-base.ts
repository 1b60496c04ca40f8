import type { AnyStateMachine } from 'xstate';
import { Actor, type ExitReason } from '../runtime/actor.ts';
import { compile, stepMachine, type CompiledMachine } from '../runtime/compiled-machine.ts';

/** A {@link TableActor}'s compiled machine and the two events of its way out. */
export interface TableLifecycle<S extends string, E extends string> {
  machine: CompiledMachine<S, E>;
  /** From any live state to the state in which it releases what it holds (`stopping`). */
  stop: E;
  /** From that state to the final one (`stopped`), once all is released. */
  stopped: E;
}

/**
 * Compiles a table actor's machine (`compile()`) and checks that every live state takes `stop`
 * and that `stop` then `stopped` ends in a final state, so an exit can always get out. Throws a
 * `TypeError` naming the state otherwise. Called once, at module load.
 *
 * @example
 * const lifecycle = tableLifecycle<PresenceState, PresenceEvent>(presenceMachine, 'presence.stop', 'presence.stopped');
 */
export function tableLifecycle<S extends string, E extends string>(machine: AnyStateMachine, stop: E, stopped: E): TableLifecycle<S, E> {
  const m = compile<S, E>(machine);
  const stopping = m.next(m.initial, stop);
  const end = stopping === undefined ? undefined : m.next(stopping, stopped);
  if (end === undefined || !m.final.has(end)) throw new TypeError(`${m.id}: ${stop} then ${stopped} does not end in a final state`);
  for (const s of m.states) {
    if (!m.final.has(s) && s !== stopping && m.next(s, stop) !== stopping) throw new TypeError(`${m.id}: state ${s} does not take ${stop} to ${stopping}`);
  }
  return { machine: m, stop, stopped };
}

/**
 * What the hub's control-plane tables are made from (`presence:NAME`, `requests:NAME`): a
 * main-thread actor that holds only maps and timers, no socket and no thread, so its stop needs
 * no drain and happens at once, whatever asked for it (a supervisor's stop, a kill, a crash).
 *
 * Its state is the state of its machine, stepped through `stepMachine()`: every state the tree
 * shows was reached by a transition of that machine, and each change is an actor event. The way
 * out is always `stop`, then {@link release} (answers what is pending, clears every timer and
 * map), then `stopped`, then the DOWN.
 *
 * @example
 * class Table extends TableActor<TableState, TableEvent> {
 *   constructor() { super('t', 'table', undefined, lifecycle); }
 *   start(): this { this.step('t.start'); this.markRunning(); return this; }
 *   protected release(): void { this.#timers.clear(); }
 * }
 */
export abstract class TableActor<S extends string, E extends string> extends Actor {
  readonly #lifecycle: TableLifecycle<S, E>;
  #state: S;

  protected constructor(id: string, type: string, parent: Actor | undefined, lifecycle: TableLifecycle<S, E>) {
    super(id, type, parent);
    this.#lifecycle = lifecycle;
    this.#state = lifecycle.machine.initial;
  }

  get state(): S {
    return this.#state;
  }

  /**
   * Steps the machine with `event`; false when the machine does not take it in the current
   * state (the state is then unchanged).
   */
  protected step(event: E): boolean {
    const next = stepMachine(this.#lifecycle.machine, this, this.#state, event);
    if (next === undefined) return false;
    this.#state = next;
    return true;
  }

  /** Releases whatever the table holds; called once, in the machine's stopping state. */
  protected abstract release(): void;

  protected requestStop(): boolean {
    this.exit('shutdown');
    return false;
  }

  protected forceStop(): void {
    this.exit('killed');
  }

  protected override exit(reason: ExitReason, error?: unknown): void {
    // Not taken while already stopping: a release that ends up here again is ignored.
    if (this.status === 'exited' || !this.step(this.#lifecycle.stop)) return;
    try {
      this.release();
    } finally {
      this.step(this.#lifecycle.stopped);
      super.exit(reason, error);
    }
  }
}
