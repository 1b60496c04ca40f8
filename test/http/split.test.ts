import { describe, expect, test } from 'vitest';
import fc from 'fast-check';
import { routesSchema } from '../../src/config/schema-routes.ts';
import { Split, cookieValue, splitFor, stickyValueOf } from '../../src/http/split.ts';

/** mulberry32: a seeded source, so share tolerances are checked on the same draws every run. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function shares(pick: (i: number) => string | undefined, n: number): Map<string | undefined, number> {
  const counts = new Map<string | undefined, number>();
  for (let i = 0; i < n; i++) {
    const u = pick(i);
    counts.set(u, (counts.get(u) ?? 0) + 1);
  }
  for (const [k, v] of counts) counts.set(k, v / n);
  return counts;
}

const entries = [
  { upstream: 'a', weight: 5 },
  { upstream: 'b', weight: 3 },
  { upstream: 'off', weight: 0 },
  { upstream: 'c', weight: 2 },
];

describe('weighted choice', () => {
  test('shares follow the weights within 1% over 100,000 draws; weight 0 never chosen', () => {
    const split = new Split(entries, seeded(1));
    const s = shares(() => split.pick(), 100_000);
    expect(Math.abs(s.get('a')! - 0.5)).toBeLessThan(0.01);
    expect(Math.abs(s.get('b')! - 0.3)).toBeLessThan(0.01);
    expect(Math.abs(s.get('c')! - 0.2)).toBeLessThan(0.01);
    expect(s.has('off')).toBe(false);
  });

  test('the random source decides: its extremes give the first and the last entry', () => {
    expect(new Split(entries, () => 0).pick()).toBe('a');
    expect(new Split(entries, () => 0.999999).pick()).toBe('c');
    expect(new Split(entries, () => 0.5).pick()).toBe('b'); // 5 of 10 is past a's share
  });

  test('an empty sticky value is a weighted choice; every weight 0 picks nothing', () => {
    expect(new Split(entries, () => 0).pick('')).toBe('a');
    expect(new Split([{ upstream: 'x', weight: 0 }]).pick('v')).toBeUndefined();
    expect(new Split([{ upstream: 'x', weight: 0 }]).pick()).toBeUndefined();
  });

  test('splitFor builds one for split routes only', () => {
    const [one, two] = routesSchema.parse([{ upstream: 'u' }, { split: [{ upstream: 'a' }, { upstream: 'b', weight: 3 }] }]);
    expect(splitFor(one!)).toBeUndefined();
    expect(splitFor(two!, () => 0.5)!.pick()).toBe('b');
  });
});

describe('sticky (weighted rendezvous)', () => {
  const values = Array.from({ length: 20_000 }, (_, i) => `user-${i}`);

  test('a value keeps its upstream, whatever the random source and entry order', () => {
    const s1 = new Split(entries, seeded(1));
    const s2 = new Split([...entries].reverse(), seeded(2));
    for (const v of values.slice(0, 2000)) {
      const u = s1.pick(v);
      expect(s1.pick(v)).toBe(u);
      expect(s2.pick(v)).toBe(u);
    }
  });

  test('weights are respected over 20,000 values (within 1.5%)', () => {
    const split = new Split(entries);
    const s = shares((i) => split.pick(values[i]), values.length);
    expect(Math.abs(s.get('a')! - 0.5)).toBeLessThan(0.015);
    expect(Math.abs(s.get('b')! - 0.3)).toBeLessThan(0.015);
    expect(Math.abs(s.get('c')! - 0.2)).toBeLessThan(0.015);
    expect(s.has('off')).toBe(false);
  });

  test('removing an entry moves only the values that were on it, in proportion to the weights', () => {
    const before = new Split(entries);
    const after = new Split(entries.filter((e) => e.upstream !== 'b'));
    const moved = new Map<string, number>();
    for (const v of values) {
      const was = before.pick(v)!;
      const now = after.pick(v)!;
      if (was !== 'b') expect(now).toBe(was);
      else moved.set(now, (moved.get(now) ?? 0) + 1);
    }
    const total = (moved.get('a') ?? 0) + (moved.get('c') ?? 0);
    expect(Math.abs(moved.get('a')! / total - 5 / 7)).toBeLessThan(0.03);
  });

  test('property: on random entry sets, removing one entry moves only its values; adding one only takes values', () => {
    const entry = fc.record({ upstream: fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f'), weight: fc.integer({ min: 1, max: 10 }) });
    fc.assert(
      fc.property(fc.uniqueArray(entry, { selector: (e) => e.upstream, minLength: 2, maxLength: 6 }), fc.nat(), fc.array(fc.string(), { minLength: 1, maxLength: 50 }), (es, k, vs) => {
        const gone = es[k % es.length]!.upstream;
        const full = new Split(es);
        const less = new Split(es.filter((e) => e.upstream !== gone));
        for (const v of vs.map((s) => `k${s}`)) {
          const was = full.pick(v);
          const now = less.pick(v);
          if (was !== gone) expect(now).toBe(was);
          else expect(now).not.toBe(gone);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('cookieValue', () => {
  test.each([
    ['a=1; session=abc; b=2', 'session', 'abc'],
    ['session=abc', 'session', 'abc'],
    ['session=abc;', 'session', 'abc'],
    ['a=1;session=x', 'session', 'x'],
    ['a=1;  session=x  ; b', 'session', 'x'],
    ['session="q v"', 'session', 'q v'],
    ['session=', 'session', ''],
    ['xsession=1; session=2', 'session', '2'],
    ['sessionid=1', 'session', undefined],
    ['a=session=1', 'session', undefined],
    ['session', 'session', undefined],
    ['', 'session', undefined],
    [undefined, 'session', undefined],
    ['a=1; b=2', 'b', '2'],
    ['=1; b=2', '', undefined],
  ])('%s, cookie %s -> %s', (header, name, expected) => {
    expect(cookieValue(header, name)).toBe(expected);
  });
});

describe('stickyValueOf', () => {
  const [byHeader, byCookie, both, none] = routesSchema.parse([
    { split: [{ upstream: 'a' }], sticky: { header: 'X-User' } },
    { split: [{ upstream: 'a' }], sticky: { cookie: 'sid' } },
    { split: [{ upstream: 'a' }], sticky: { header: 'x-user', cookie: 'sid' } },
    { split: [{ upstream: 'a' }] },
  ]);
  const headers = (h: Record<string, string>) => (n: string) => h[n];

  test.each([
    ['header', byHeader!, { 'x-user': 'u1', cookie: 'sid=s1' }, 'u1'],
    ['header absent', byHeader!, { cookie: 'sid=s1' }, undefined],
    ['cookie', byCookie!, { 'x-user': 'u1', cookie: 'a=b; sid=s1' }, 's1'],
    ['header first, then cookie', both!, { 'x-user': 'u1', cookie: 'sid=s1' }, 'u1'],
    ['empty header falls back to the cookie', both!, { 'x-user': '', cookie: 'sid=s1' }, 's1'],
    ['no sticky', none!, { 'x-user': 'u1' }, undefined],
  ])('%s', (_why, route, h, expected) => {
    expect(stickyValueOf(route, headers(h))).toBe(expected);
  });
});
