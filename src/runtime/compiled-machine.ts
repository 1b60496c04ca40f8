import { initialTransition, transition, type AnyStateMachine } from 'xstate';
import { actorEventsEnabled, emitActorEvent } from './events.ts';

/**
 * An xstate machine compiled to a transition table, for actors that live by the tens of
 * thousands (connections, hub clients). The machine stays the single definition (readable,
 * visualisable, testable with xstate), and `compile()` steps it with xstate's own pure
 * `transition()` for every (state, event) pair once, at module load. Stepping at run time is then
 * one table look-up instead of an xstate actor's event processing and heap per actor
 * (docs/architecture.md, "Decisions and their measurements").
 *
 * Only machines whose transitions depend on nothing but (state, event type) can be compiled:
 * flat states, no guards, no context, no delayed or invoked work. `compile()` checks that and
 * throws otherwise. Side effects belong to the actor shell that steps the table.
 *
 * @example
 * const m = compile(connectionMachine);
 * let s = m.initial;           // 'connecting'
 * s = m.next(s, 'backend.connected'); // 'open'
 */
export interface CompiledMachine<S extends string = string, E extends string = string> {
  readonly id: string;
  readonly initial: S;
  readonly states: readonly S[];
  readonly events: readonly E[];
  readonly final: ReadonlySet<S>;
  /** The next state, or `undefined` when the event is not handled in `state`. */
  next(state: S, event: E): S | undefined;
}

type AnyNode = AnyStateMachine['root'];

function checkNode(machine: AnyStateMachine, key: string, node: AnyNode, events: Set<string>): void {
  const where = `compile(${machine.id}): ${key}`;
  if (node.invoke.length > 0 || node.after.length > 0) throw new TypeError(`${where} invokes or delays`);
  if (node.always && node.always.length > 0) throw new TypeError(`${where} has an eventless (always) transition`);
  for (const [ev, ts] of node.transitions) {
    if (ev === '*' || ev.includes('*')) throw new TypeError(`${where}: wildcard event`);
    for (const t of ts) if (t.guard) throw new TypeError(`${where}: guarded transition --${ev}-->`);
    // xstate's own events (done/error of the machine itself) never come from outside.
    if (!ev.startsWith('xstate.')) events.add(ev);
  }
}

/**
 * Compiles a flat, guard-free xstate machine to a transition table; throws a `TypeError` naming
 * the state for anything else (nested, parallel or history states, guards, wildcards, invoked,
 * delayed or eventless transitions).
 *
 * @example
 * const table = compile(setup({}).createMachine({ initial: 'a', states: { a: { on: { go: 'b' } }, b: {} } }));
 * table.next('a', 'go'); // 'b'
 */
export function compile<S extends string = string, E extends string = string>(machine: AnyStateMachine): CompiledMachine<S, E> {
  const root = machine.root;
  if (root.type === 'parallel') throw new TypeError(`compile(${machine.id}): the root is parallel`);
  const states: string[] = [];
  const events = new Set<string>();
  const final = new Set<string>();
  // Transitions on the machine itself (`on` at the root) apply in every state.
  checkNode(machine, '(root)', root, events);
  for (const [key, node] of Object.entries(root.states)) {
    if (Object.keys(node.states).length > 0) throw new TypeError(`compile(${machine.id}): state ${key} is nested`);
    if (node.type === 'history' || node.type === 'parallel') throw new TypeError(`compile(${machine.id}): state ${key} is a ${node.type} state`);
    checkNode(machine, `state ${key}`, node, events);
    states.push(key);
    if (node.type === 'final') final.add(key);
  }
  const [init] = initialTransition(machine);
  if (typeof init.value !== 'string') throw new TypeError(`compile(${machine.id}): the initial state is not a flat state`);
  const initial = init.value;
  const table = new Map<string, Map<string, string>>();
  for (const s of states) {
    const row = new Map<string, string>();
    table.set(s, row);
    // A machine in a final state is done and takes no more events.
    if (final.has(s)) continue;
    const snap = machine.resolveState({ value: s, context: init.context });
    for (const ev of events) {
      if (!snap.can({ type: ev })) continue;
      const [next] = transition(machine, snap, { type: ev });
      if (typeof next.value !== 'string') throw new TypeError(`compile(${machine.id}): ${s} --${ev}--> is not a flat state`);
      row.set(ev, next.value);
    }
  }
  return {
    id: machine.id,
    initial: initial as S,
    states: states as S[],
    events: [...events] as E[],
    final: final as Set<S>,
    next: (state, event) => table.get(state)?.get(event) as S | undefined,
  };
}

/**
 * One step of an actor that runs a compiled machine: the state `event` leads to from `state`, or
 * `undefined` when the machine does not handle it there (or stays). A change is published as a
 * `state` actor event, so every state an actor shows went through its machine and `/actors/events`
 * sees each one. The actor stores the returned state and runs its own side effects.
 *
 * @example
 * const next = stepMachine(table, this, this.#state, 'drain');
 * if (next !== undefined) this.#state = next;
 */
export function stepMachine<S extends string, E extends string>(machine: CompiledMachine<S, E>, actor: { readonly id: string; readonly type: string }, state: S, event: E): S | undefined {
  const next = machine.next(state, event);
  if (next === undefined || next === state) return undefined;
  if (actorEventsEnabled()) emitActorEvent({ type: 'state', id: actor.id, actorType: actor.type, state: next });
  return next;
}
