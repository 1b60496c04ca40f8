/**
 * DenseSet against a JS Set as the model: any sequence of add, delete, has and clear over a few
 * objects leaves the same members, and `values()` is a copy that members may leave meanwhile.
 */
import { afterEach, describe, expect, test } from 'vitest';
import fc from 'fast-check';
import { DenseSet } from '../../src/runtime/dense-set.ts';
import { expectNoLiveActors } from './fixtures.ts';

afterEach(() => expectNoLiveActors());

type Op = { op: 'add' | 'delete' | 'has'; i: number } | { op: 'clear' };

describe('DenseSet', () => {
  test('behaves as a Set of the same objects for any sequence of operations', () => {
    const op: fc.Arbitrary<Op> = fc.oneof(
      { weight: 4, arbitrary: fc.record({ op: fc.constant('add' as const), i: fc.nat({ max: 9 }) }) },
      { weight: 3, arbitrary: fc.record({ op: fc.constant('delete' as const), i: fc.nat({ max: 9 }) }) },
      { weight: 2, arbitrary: fc.record({ op: fc.constant('has' as const), i: fc.nat({ max: 9 }) }) },
      { weight: 1, arbitrary: fc.constant({ op: 'clear' as const }) },
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 80 }), (ops) => {
        const objs = Array.from({ length: 10 }, (_, i) => ({ i }));
        // Two sets over the same objects: each keeps its own places.
        const a = new DenseSet<{ i: number }>();
        const b = new DenseSet<{ i: number }>();
        const model = new Set<{ i: number }>();
        for (const o of ops) {
          if (o.op === 'clear') {
            a.clear();
            model.clear();
            continue;
          }
          const x = objs[o.i]!;
          if (o.op === 'add') {
            expect(a.add(x)).toBe(!model.has(x));
            b.add(x);
            model.add(x);
          } else if (o.op === 'delete') {
            expect(a.delete(x)).toBe(model.has(x));
            model.delete(x);
          } else expect(a.has(x)).toBe(model.has(x));
          expect(a.size).toBe(model.size);
          expect(new Set(a.values())).toEqual(model);
        }
        for (const x of objs) expect(b.has(x)).toBe(ops.some((o) => o.op === 'add' && o.i === x.i));
      }),
      { numRuns: 300 },
    );
  });

  test('values() is a copy: deleting while walking it visits each member once', () => {
    const s = new DenseSet<object>();
    const objs = Array.from({ length: 6 }, () => ({}));
    for (const o of objs) s.add(o);
    const seen = new Set<object>();
    for (const o of s.values()) {
      seen.add(o);
      s.delete(o);
    }
    expect(seen.size).toBe(6);
    expect(s.size).toBe(0);
  });
});
