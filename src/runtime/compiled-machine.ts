import { transition, type AnyStateMachine } from 'xstate';

/**
 * An xstate machine compiled to a transition table, for actors that live by the tens of
 * thousands (connections, hub clients). The machine stays the single definition (readable,
 * visualisable, testable with xstate), and `compile()` steps it with xstate's own pure
 * `transition()` for every (state, event) pair once, at module load. Stepping at run time is then
 * one table look-up instead of xstate's ~1-2 us per event and ~3.8 KB of heap per actor
 * (DESIGN.md, "Measured costs").
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

export function compile<S extends string = string, E extends string = string>(machine: AnyStateMachine): CompiledMachine<S, E> {
  const root = machine.root;
  const states: string[] = [];
  const events = new Set<string>();
  const final = new Set<string>();
  for (const [key, node] of Object.entries(root.states)) {
    if (Object.keys(node.states).length > 0) throw new TypeError(`compile(${machine.id}): state ${key} is nested`);
    if (node.invoke.length > 0 || node.after.length > 0) throw new TypeError(`compile(${machine.id}): state ${key} invokes or delays`);
    states.push(key);
    if (node.type === 'final') final.add(key);
    for (const [ev, ts] of node.transitions) {
      if (ev === '*' || ev.includes('*')) throw new TypeError(`compile(${machine.id}): wildcard event in ${key}`);
      for (const t of ts) if (t.guard) throw new TypeError(`compile(${machine.id}): guarded transition ${key} --${ev}-->`);
      events.add(ev);
    }
  }
  const initial = machine.getInitialSnapshot(undefined as never).value as string;
  const table = new Map<string, Map<string, string>>();
  for (const s of states) {
    const row = new Map<string, string>();
    const snap = machine.resolveState({ value: s, context: undefined as never });
    for (const ev of events) {
      if (!root.states[s]!.transitions.has(ev)) continue;
      const [next] = transition(machine, snap, { type: ev });
      row.set(ev, next.value as string);
    }
    table.set(s, row);
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
