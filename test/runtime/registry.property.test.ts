import { afterEach, describe, expect, test } from 'vitest';
import fc from 'fast-check';
import { Registry } from '../../src/runtime/registry.ts';
import type { Actor } from '../../src/runtime/actor.ts';
import { MachineActor } from '../../src/runtime/machine-actor.ts';
import { TestActor, cleanMachine, plainMachine, expectNoLiveActors } from './fixtures.ts';

interface Info {
  user: string | undefined;
  tags: string[];
  node: string;
}

const indexes = {
  user: (v: Info) => v.user,
  tags: (v: Info) => v.tags, // multi-key, possibly with duplicates, possibly empty
  node: (v: Info) => v.node,
};
type IndexName = keyof typeof indexes;

/** The sync test actor, or a real xstate-backed actor that stops cleanly or at once. */
type Kind = 'test' | 'clean' | 'plain';
type Live = TestActor | MachineActor;

function make(kind: Kind, id: string): Live {
  if (kind === 'test') return new TestActor(id);
  return new MachineActor({ id, type: 'worker', logic: kind === 'clean' ? cleanMachine : plainMachine }).start();
}

function crash(a: Live): void {
  if (a instanceof TestActor) a.crash();
  else a.send({ type: 'crash' });
}

function finish(a: Live): void {
  if (a instanceof TestActor) a.finish();
  else a.send({ type: 'finish' });
}

type Op =
  | { op: 'register'; id: string; kind: Kind; info: Info }
  | { op: 'reregister'; pick: number; info: Info }
  | { op: 'registerDead'; pick: number; info: Info }
  | { op: 'stop' | 'crash' | 'kill' | 'finish'; pick: number }
  | { op: 'unregister'; id: string };

const ids = fc.constantFrom('a', 'b', 'c', 'd', 'e');
const key = fc.constantFrom('k1', 'k2', 'k3', 'k4');
const info: fc.Arbitrary<Info> = fc.record({
  user: fc.option(fc.constantFrom('u1', 'u2', 'u3'), { nil: undefined }),
  tags: fc.array(key, { maxLength: 4 }),
  node: fc.constantFrom('n1', 'n2'),
});
const pick = fc.nat({ max: 1_000 });
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('register' as const), id: ids, kind: fc.constantFrom<Kind>('test', 'clean', 'plain'), info }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('reregister' as const), pick, info }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('registerDead' as const), pick, info }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constantFrom('stop' as const, 'crash' as const, 'kill' as const, 'finish' as const), pick }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('unregister' as const), id: ids }) },
);

/** What the registry must hold: the registered entry per id, and nothing else. */
class Model {
  readonly byId = new Map<string, { actor: Live; info: Info }>();

  expected(index: IndexName): Map<string, Set<Actor>> {
    const out = new Map<string, Set<Actor>>();
    for (const { actor, info } of this.byId.values()) {
      const raw = indexes[index](info);
      const keys = raw === undefined ? [] : typeof raw === 'string' ? [raw] : raw;
      for (const k of keys) {
        let s = out.get(k);
        if (!s) out.set(k, (s = new Set()));
        s.add(actor);
      }
    }
    return out;
  }
}

function checkAgainst(reg: Registry<Info>, model: Model): void {
  expect(reg.size).toBe(model.byId.size);
  for (const [id, { actor, info }] of model.byId) {
    expect(actor.status).not.toBe('exited');
    const got = reg.get(id);
    expect(got?.actor).toBe(actor);
    expect(got?.value).toBe(info);
  }
  expect(new Set([...reg.values()].map((e) => e.actor))).toEqual(new Set([...model.byId.values()].map((e) => e.actor)));
  const sizes = reg.sizes();
  for (const index of Object.keys(indexes) as IndexName[]) {
    const want = model.expected(index);
    expect(new Set(reg.keys(index))).toEqual(new Set(want.keys()));
    expect(sizes[index]).toBe(want.size);
    for (const [k, actors] of want) {
      const got = reg.lookup(index, k);
      expect(got).toHaveLength(actors.size);
      expect(new Set(got.map((e) => e.actor))).toEqual(actors);
      expect(reg.count(index, k)).toBe(actors.size);
    }
  }
}

/**
 * Runs one step. `unique`: the registry has no map by id (`byId: false`), whose callers never
 * register an id twice: every new actor gets an id of its own, and `unregister` names one made.
 */
async function apply(step: Op, reg: Registry<Info>, model: Model, created: Live[], unique = false): Promise<void> {
  const nth = (n: number) => created[n % created.length];
  switch (step.op) {
    case 'register': {
      // Same id as a live entry: a new incarnation replaces it (the old actor lives on, unregistered).
      const a = make(step.kind, unique ? `${step.id}-${created.length}` : step.id);
      created.push(a);
      expect(reg.register(a, step.info)).toBe(true);
      model.byId.set(a.id, { actor: a, info: step.info });
      return;
    }
    case 'reregister': {
      const a = nth(step.pick);
      // Without a map by id, registering an id again is outside the contract.
      if (!a || a.status === 'exited' || unique) return;
      expect(reg.register(a, step.info)).toBe(true);
      model.byId.set(a.id, { actor: a, info: step.info });
      return;
    }
    case 'registerDead': {
      const a = nth(step.pick);
      if (!a || a.status !== 'exited') return;
      expect(reg.register(a, step.info)).toBe(false);
      return;
    }
    case 'unregister': {
      const id = unique ? (created[step.id.charCodeAt(0) % Math.max(1, created.length)]?.id ?? step.id) : step.id;
      const had = model.byId.has(id);
      expect(reg.unregister(id)).toBe(had);
      model.byId.delete(id);
      return;
    }
    default: {
      const a = nth(step.pick);
      if (!a) return;
      const wasLive = a.status !== 'exited';
      if (step.op === 'stop') await a.shutdown(1_000);
      else if (step.op === 'kill') a.kill();
      else if (step.op === 'crash') crash(a);
      else finish(a);
      expect(a.status).toBe('exited');
      if (wasLive && model.byId.get(a.id)?.actor === a) model.byId.delete(a.id);
    }
  }
}

afterEach(() => expectNoLiveActors());

describe.each([
  ['with a map by id', true],
  ['without a map by id (unique ids)', false],
])('Registry (property), %s', (_name, byId) => {
  test('after every step each index holds exactly the live registered actors; all empty at the end', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 60 }), async (ops) => {
        const reg = new Registry<Info>('prop', indexes, { byId });
        const model = new Model();
        const created: Live[] = [];
        try {
          for (const step of ops) {
            await apply(step, reg, model, created, !byId);
            checkAgainst(reg, model);
          }
        } finally {
          for (const a of created) await a.shutdown('brutal');
        }
        checkAgainst(reg, new Model());
        expect(reg.sizes()).toEqual({ byId: 0, user: 0, tags: 0, node: 0 });
        // Nothing keeps watching the actors it no longer holds.
        for (const a of created) if (a instanceof TestActor) expect(a.activeMonitors).toBe(0);
      }),
      { numRuns: 200 },
    );
  });
});

describe('Registry', () => {
  test('register, lookup, and clean-up on DOWN from every index', async () => {
    const reg = new Registry<Info>('clients', indexes);
    const a = new TestActor('a');
    const b = new MachineActor({ id: 'b', type: 'worker', logic: cleanMachine }).start();
    expect(reg.register(a, { user: 'u1', tags: ['x', 'y'], node: 'n1' })).toBe(true);
    expect(reg.register(b, { user: 'u1', tags: ['y'], node: 'n2' })).toBe(true);
    expect(reg.lookup('user', 'u1').map((e) => e.actor.id).sort()).toEqual(['a', 'b']);
    expect(reg.count('tags', 'y')).toBe(2);
    expect(reg.keys('tags').sort()).toEqual(['x', 'y']);
    expect(reg.has('a')).toBe(true);

    b.send({ type: 'crash' });
    expect(reg.has('b')).toBe(false);
    expect(reg.lookup('user', 'u1').map((e) => e.actor.id)).toEqual(['a']);
    expect(reg.keys('node')).toEqual(['n1']);

    await a.shutdown();
    expect(reg.sizes()).toEqual({ byId: 0, user: 0, tags: 0, node: 0 });
    expect(reg.lookup('user', 'u1')).toEqual([]);
  });

  test('values() and forEach() over entries that leave meanwhile: each present entry once, none that left', () => {
    for (const byId of [true, false]) {
      const reg = new Registry<Info>('r', indexes, { byId });
      const actors = Array.from({ length: 8 }, (_, i) => new TestActor(`a${i}`));
      for (const a of actors) reg.register(a, { user: undefined, tags: [], node: 'n1' });
      const seen: string[] = [];
      // Each visit kills one other actor not yet visited (its DOWN moves entries in the list).
      for (const { actor } of reg.values()) {
        // An entry that left before its turn is not visited.
        expect(actor.status).not.toBe('exited');
        seen.push(actor.id);
        actors.find((a) => a.status !== 'exited' && a !== actor && !seen.includes(a.id))?.kill();
      }
      expect(new Set(seen).size).toBe(seen.length);
      expect(seen).toHaveLength(4);
      const visited: string[] = [];
      reg.forEach((_v, actor) => {
        visited.push(actor.id);
        actor.kill();
      });
      expect(visited.sort()).toEqual(seen.slice().sort());
      expect(reg.sizes()).toEqual({ byId: 0, user: 0, tags: 0, node: 0 });
    }
  });

  test('an unknown index is a RangeError', () => {
    const reg = new Registry<Info>('r', indexes);
    expect(() => reg.lookup('nope', 'k')).toThrow(RangeError);
  });

  test('a dead actor is not registered', () => {
    const reg = new Registry<Info>('r', indexes);
    const a = new TestActor('a');
    a.kill();
    expect(reg.register(a, { user: 'u1', tags: [], node: 'n1' })).toBe(false);
    expect(reg.size).toBe(0);
  });

  test('a new incarnation replaces the old entry; the old one is no longer watched and its DOWN removes nothing', () => {
    const reg = new Registry<Info>('r', indexes);
    const old = new TestActor('a');
    const next = new TestActor('a');
    reg.register(old, { user: 'u1', tags: ['t'], node: 'n1' });
    expect(old.activeMonitors).toBe(1);
    reg.register(next, { user: 'u2', tags: [], node: 'n1' });
    expect(old.activeMonitors).toBe(0);
    expect(reg.keys('user')).toEqual(['u2']);
    expect(reg.keys('tags')).toEqual([]);
    old.crash();
    expect(reg.get('a')?.actor).toBe(next);
    next.finish();
    expect(reg.size).toBe(0);
  });

  test('re-registering the same actor updates its keys and keeps one monitor', () => {
    const reg = new Registry<Info>('r', indexes);
    const a = new TestActor('a');
    reg.register(a, { user: 'u1', tags: ['t1'], node: 'n1' });
    reg.register(a, { user: 'u2', tags: ['t2', 't2'], node: 'n1' });
    expect(a.activeMonitors).toBe(1);
    expect(reg.keys('user')).toEqual(['u2']);
    expect(reg.count('tags', 't2')).toBe(1);
    a.kill();
    expect(reg.sizes()).toEqual({ byId: 0, user: 0, tags: 0, node: 0 });
  });

  test('unregister removes the entry from every index and stops watching; the actor lives on', () => {
    const reg = new Registry<Info>('r', indexes);
    const a = new TestActor('a');
    reg.register(a, { user: 'u1', tags: ['t'], node: 'n1' });
    expect(reg.unregister('a')).toBe(true);
    expect(reg.unregister('a')).toBe(false);
    expect(a.activeMonitors).toBe(0);
    expect(a.status).toBe('running');
    expect(reg.sizes()).toEqual({ byId: 0, user: 0, tags: 0, node: 0 });
    a.kill();
  });

  test('an index function that throws leaves the registry unchanged', () => {
    const reg = new Registry<{ k: string; bad?: boolean }>('r', {
      first: (v) => v.k,
      second: (v) => {
        if (v.bad) throw new Error('bad value');
        return v.k;
      },
    });
    const a = new TestActor('a');
    reg.register(a, { k: 'old' });
    const a2 = new TestActor('a');
    expect(() => reg.register(a2, { k: 'new', bad: true })).toThrow('bad value');
    expect(reg.get('a')?.actor).toBe(a);
    expect(reg.keys('first')).toEqual(['old']);
    expect(a2.activeMonitors).toBe(0);
    a.kill();
    a2.kill();
    expect(reg.sizes()).toEqual({ byId: 0, first: 0, second: 0 });
  });

  test('values() survives entries leaving while it is iterated', () => {
    const reg = new Registry('r');
    const actors = ['a', 'b', 'c'].map((id) => new TestActor(id));
    for (const a of actors) reg.register(a, undefined);
    const seen: string[] = [];
    for (const { actor } of reg.values()) {
      seen.push(actor.id);
      actor.kill();
    }
    expect(seen).toEqual(['a', 'b', 'c']);
    expect(reg.size).toBe(0);
  });
});
