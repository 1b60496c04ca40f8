import { describe, expect, test } from 'vitest';
import { assign, createMachine, fromPromise, initialTransition, setup, transition, type AnyMachineSnapshot, type AnyStateMachine } from 'xstate';
import { compile } from '../../src/runtime/compiled-machine.ts';

/** A connection-like machine: self and targetless transitions, root-level events, context, a final state. */
const connection = setup({
  types: {
    context: {} as { events: number },
    events: {} as
      | { type: 'backend.connected' }
      | { type: 'client.end' }
      | { type: 'backend.end' }
      | { type: 'data' }
      | { type: 'ping' }
      | { type: 'timeout' }
      | { type: 'reset' }
      | { type: 'unknown' },
  },
  actions: { count: assign({ events: ({ context }) => context.events + 1 }) },
}).createMachine({
  id: 'connection',
  initial: 'connecting',
  context: { events: 0 },
  // Root-level transitions apply in every state that does not handle the event itself.
  on: { timeout: '.closed', reset: { target: '.connecting', actions: 'count' } },
  states: {
    connecting: { entry: 'count', on: { 'backend.connected': 'open', 'client.end': 'closed' } },
    open: {
      on: {
        data: { actions: 'count' }, // handled, no state change
        ping: { target: 'open', reenter: true },
        'client.end': 'half_closed_client',
        'backend.end': 'half_closed_backend',
      },
    },
    half_closed_client: { on: { 'backend.end': 'closed', data: {} } },
    half_closed_backend: { on: { 'client.end': 'closed', reset: 'open' } },
    closed: { type: 'final' },
  },
});

const ALL_EVENTS = ['backend.connected', 'client.end', 'backend.end', 'data', 'ping', 'timeout', 'reset', 'unknown'] as const;

/** Every reachable state, with a snapshot xstate itself produced (final states are `done`). */
function reachable(machine: AnyStateMachine): Map<string, AnyMachineSnapshot> {
  const [init] = initialTransition(machine);
  const seen = new Map<string, AnyMachineSnapshot>([[init.value as string, init]]);
  const todo = [init];
  while (todo.length > 0) {
    const snap = todo.pop()!;
    for (const type of ALL_EVENTS) {
      const [next] = transition(machine, snap, { type } as never);
      const v = next.value as string;
      if (!seen.has(v)) {
        seen.set(v, next);
        todo.push(next);
      }
    }
  }
  return seen;
}

describe('compile()', () => {
  const table = compile(connection);

  test('knows the states, events, initial and final states', () => {
    expect(table.id).toBe('connection');
    expect(table.initial).toBe('connecting');
    expect([...table.states].sort()).toEqual(['closed', 'connecting', 'half_closed_backend', 'half_closed_client', 'open']);
    expect([...table.events].sort()).toEqual(['backend.connected', 'backend.end', 'client.end', 'data', 'ping', 'reset', 'timeout']);
    expect([...table.final]).toEqual(['closed']);
  });

  test("gives the same next state as xstate's transition() for every (state, event) pair", () => {
    const states = reachable(connection);
    expect(states.size).toBe(table.states.length);
    let pairs = 0;
    for (const [state, snap] of states) {
      for (const type of ALL_EVENTS) {
        if (snap.status === 'done') {
          // A done actor takes no more events. xstate's pure transition() does not check that and
          // would still apply the root's `reset` to a done snapshot (status staying 'done'); the
          // table follows the actor.
          expect(table.next(state, type)).toBeUndefined();
        } else {
          const [next] = transition(connection, snap, { type });
          expect({ state, type, next: table.next(state, type) ?? state }).toEqual({ state, type, next: next.value });
        }
        pairs++;
      }
    }
    expect(pairs).toBe(5 * ALL_EVENTS.length);
  });

  test('says which events a state does not handle', () => {
    expect(table.next('open', 'data')).toBe('open');
    expect(table.next('open', 'ping')).toBe('open');
    expect(table.next('open', 'backend.connected')).toBeUndefined();
    expect(table.next('open', 'unknown' as string)).toBeUndefined();
    expect(table.next('half_closed_backend', 'reset')).toBe('open'); // the state's own handler wins over the root's
    expect(table.next('half_closed_client', 'reset')).toBe('connecting');
    expect(table.next('closed', 'reset')).toBeUndefined(); // done: takes no more events
    expect(table.next('nope', 'reset')).toBeUndefined();
  });

  test('a machine without context compiles too', () => {
    const m = createMachine({ id: 'flat', initial: 'a', states: { a: { on: { go: 'b' } }, b: { on: { go: 'a' } } } });
    const t = compile(m);
    expect(t.next('a', 'go')).toBe('b');
    expect(t.next(t.next('a', 'go')!, 'go')).toBe('a');
  });

  test.each<[string, AnyStateMachine, RegExp]>([
    [
      'guarded',
      createMachine({ id: 'g', initial: 'a', states: { a: { on: { go: { target: 'b', guard: () => true } } }, b: {} } }),
      /state a: guarded transition --go-->/,
    ],
    [
      'guarded at the root',
      createMachine({ id: 'g2', initial: 'a', on: { go: { target: '.b', guard: () => true } }, states: { a: {}, b: {} } }),
      /\(root\): guarded/,
    ],
    [
      'nested',
      createMachine({ id: 'n', initial: 'a', states: { a: { initial: 'x', states: { x: {} } } } }),
      /state a is nested/,
    ],
    [
      'parallel',
      createMachine({ id: 'p', type: 'parallel', states: { a: {}, b: {} } }),
      /root is parallel/,
    ],
    [
      'invoking',
      createMachine({ id: 'i', initial: 'a', states: { a: { invoke: { src: fromPromise(async () => 1) } } } }),
      /state a invokes or delays/,
    ],
    [
      'delayed',
      createMachine({ id: 'd', initial: 'a', states: { a: { after: { 100: 'b' } }, b: {} } }),
      /state a invokes or delays/,
    ],
    [
      'eventless',
      createMachine({ id: 'e', initial: 'a', states: { a: { always: 'b' }, b: {} } }),
      /state a has an eventless/,
    ],
    [
      'wildcard',
      createMachine({ id: 'w', initial: 'a', states: { a: { on: { '*': 'b' } }, b: {} } }),
      /state a: wildcard/,
    ],
  ])('rejects a %s machine, naming the state', (_name, machine, message) => {
    expect(() => compile(machine)).toThrow(TypeError);
    expect(() => compile(machine)).toThrow(message);
  });
});
