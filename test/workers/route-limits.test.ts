import { Worker } from 'node:worker_threads';
import { once } from 'node:events';
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { RouteLimitError, StateTable } from '../../src/workers/state-table.ts';
import { BIG_ROUTE, RL_ENTRIES, RL_LOCKS, RL_STRIPE_ENTRIES } from '../../src/workers/state/layout.ts';
import { RouteLimits, STALE_NS } from '../../src/workers/state/route-limits.ts';

const MS = 1_000_000n;
/** A synthetic clock reading far from 0 (ns). */
const T0 = 10n ** 12n;

/** A fresh table and its route limits, driven by the tests' own clock. */
function fresh(): { table: StateTable; limits: RouteLimits; big: BigInt64Array } {
  const table = StateTable.create();
  const big = new BigInt64Array(table.buffers.big);
  return { table, limits: new RouteLimits(big), big };
}

/** `n` distinct keys that hash to the same stripe for (slot, route). */
function crowdedKeys(limits: RouteLimits, slot: number, route: number, n: number): string[] {
  const stripe = limits.stripeOf(slot, route, 'anchor');
  const out: string[] = [];
  for (let i = 0; out.length < n; i++) if (limits.stripeOf(slot, route, `client-${i}`) === stripe) out.push(`client-${i}`);
  return out;
}

describe('route rate limits: one GCRA bucket per (listener, route, key)', () => {
  test('a key gets its burst, then refusals that say how long until its next request', () => {
    const { limits } = fresh();
    const T = 100n * MS; // 10 per second, burst 3
    for (let i = 0; i < 3; i++) expect(limits.admit(0, 0, '10.0.0.1', T, 3n * T, T0)).toBe(0);
    expect(limits.admit(0, 0, '10.0.0.1', T, 3n * T, T0)).toBe(100);
    expect(limits.admit(0, 0, '10.0.0.1', T, 3n * T, T0 + 40n * MS)).toBe(60);
    // Rounded up: 1 ns short is still 1 ms to wait, never 0.
    expect(limits.admit(0, 0, '10.0.0.1', T, 3n * T, T0 + T - 1n)).toBe(1);
    expect(limits.admit(0, 0, '10.0.0.1', T, 3n * T, T0 + T)).toBe(0);
    expect(limits.admit(0, 0, '10.0.0.1', T, 3n * T, T0 + T)).toBe(100);
  });

  test('through the table with its own clock: burst, then a Retry-After within one interval', () => {
    const table = StateTable.create();
    const T = 10n ** 12n; // one per 1000 s: nothing refills during the test
    expect([table.routeAdmit(5, 9, 'user-1', T, 2n * T), table.routeAdmit(5, 9, 'user-1', T, 2n * T)]).toEqual([0, 0]);
    const wait = table.routeAdmit(5, 9, 'user-1', T, 2n * T);
    expect(wait).toBeGreaterThan(999_000);
    expect(wait).toBeLessThanOrEqual(1_000_000);
    expect(table.routeLimitEntries(5)).toBe(1);
    expect(table.routeLimitUntracked(5)).toBe(0);
  });

  test('refills at perSecond, and an idle key holds at most burst', () => {
    const { limits } = fresh();
    const T = 5n * MS; // 200 per second, burst 4
    for (let i = 0; i < 4; i++) expect(limits.admit(1, 0, 'k', T, 4n * T, T0)).toBe(0);
    expect(limits.admit(1, 0, 'k', T, 4n * T, T0)).toBeGreaterThan(0);
    // 3 intervals later: exactly 3 more.
    const t1 = T0 + 3n * T;
    for (let i = 0; i < 3; i++) expect(limits.admit(1, 0, 'k', T, 4n * T, t1)).toBe(0);
    expect(limits.admit(1, 0, 'k', T, 4n * T, t1)).toBe(5);
    // A minute idle refills the bucket to burst, not to 12 000.
    const t2 = t1 + 60_000n * MS;
    for (let i = 0; i < 4; i++) expect(limits.admit(1, 0, 'k', T, 4n * T, t2)).toBe(0);
    expect(limits.admit(1, 0, 'k', T, 4n * T, t2)).toBe(5);
  });

  test('distinct keys, routes and listeners have buckets of their own', () => {
    const { limits } = fresh();
    const T = 1_000n * MS;
    expect(limits.admit(2, 0, 'alice', T, T, T0)).toBe(0);
    expect(limits.admit(2, 0, 'alice', T, T, T0)).toBe(1_000);
    expect(limits.admit(2, 0, 'bob', T, T, T0)).toBe(0);
    expect(limits.admit(2, 1, 'alice', T, T, T0)).toBe(0);
    expect(limits.admit(2, 255, 'alice', T, T, T0)).toBe(0);
    expect(limits.admit(3, 0, 'alice', T, T, T0)).toBe(0);
    // An empty key (a missing header) is a key like any other.
    expect(limits.admit(2, 0, '', T, T, T0)).toBe(0);
    expect(limits.admit(2, 0, '', T, T, T0)).toBe(1_000);
    expect(limits.entries(2, T0)).toBe(5);
    expect(limits.entries(3, T0)).toBe(1);
    expect(limits.entries(2, T0 + T)).toBe(0);
  });

  test('expired entries are reused: 100 000 distinct keys over time never fill the table', () => {
    const { limits } = fresh();
    const T = MS; // 1000 per second, burst 1: an entry lives 1 ms
    let now = T0;
    for (let i = 0; i < 100_000; i++, now += 1_000n) expect(limits.admit(4, 3, `10.1.${i >> 8}.${i & 255}`, T, T, now)).toBe(0);
    now -= 1_000n;
    // Only the keys of the last millisecond are live, and the limit still holds for them.
    expect(limits.entries(4, now)).toBe(1_000);
    expect(limits.untracked(4)).toBe(0);
    expect(limits.admit(4, 3, `10.1.${99_999 >> 8}.${99_999 & 255}`, T, T, now)).toBe(1);
    expect(limits.entries(4, now + T)).toBe(0);
  });

  test('a stripe full of live entries of other keys admits without a bucket, counted; expiry frees it', () => {
    const { limits } = fresh();
    const T = 10n ** 15n; // nothing refills until the clock jumps
    const keys = crowdedKeys(limits, 6, 1, RL_STRIPE_ENTRIES + 1);
    for (const k of keys.slice(0, RL_STRIPE_ENTRIES)) expect(limits.admit(6, 1, k, T, T, T0)).toBe(0);
    const extra = keys[RL_STRIPE_ENTRIES]!;
    expect([limits.admit(6, 1, extra, T, T, T0), limits.admit(6, 1, extra, T, T, T0)]).toEqual([0, 0]);
    expect(limits.untracked(6)).toBe(2);
    expect(limits.entries(6, T0)).toBe(RL_STRIPE_ENTRIES);
    // The keys that have entries are still limited.
    expect(limits.admit(6, 1, keys[0]!, T, T, T0)).toBeGreaterThan(0);
    // Once they expired, the extra key gets a bucket of its own.
    const later = T0 + 2n * T;
    expect(limits.admit(6, 1, extra, T, T, later)).toBe(0);
    expect(limits.admit(6, 1, extra, T, T, later)).toBeGreaterThan(0);
    expect(limits.untracked(6)).toBe(2);
    expect(limits.entries(6, later)).toBe(1);
  });

  test('resetListener clears the listener\'s entries and fail-open count, and only that listener\'s', () => {
    const { table, limits } = fresh();
    const T = 10n ** 12n;
    const keys = crowdedKeys(limits, 7, 0, RL_STRIPE_ENTRIES + 1);
    for (const k of keys) expect(table.routeAdmit(7, 0, k, T, T)).toBe(0);
    expect(table.routeAdmit(8, 0, keys[0]!, T, T)).toBe(0);
    expect([table.routeLimitEntries(7), table.routeLimitUntracked(7), table.routeLimitEntries(8)]).toEqual([RL_STRIPE_ENTRIES, 1, 1]);
    table.resetListener(7);
    expect([table.routeLimitEntries(7), table.routeLimitUntracked(7), table.routeLimitEntries(8)]).toEqual([0, 0, 1]);
    // A new listener in the slot starts with full buckets; the other listener's bucket is kept.
    expect(table.routeAdmit(7, 0, keys[0]!, T, T)).toBe(0);
    expect(table.routeAdmit(8, 0, keys[0]!, T, T)).toBeGreaterThan(0);
  });

  test('a stripe lock left by a killed thread, with its claim half done, is taken over', () => {
    const { table, limits, big } = fresh();
    const T = 10n ** 12n;
    expect(limits.admit(9, 0, 'victim', T, T)).toBe(0);
    const stripe = limits.stripeOf(9, 0, 'victim');
    const first = BIG_ROUTE + RL_ENTRIES + 2 * stripe * RL_STRIPE_ENTRIES;
    const tat = Array.from({ length: RL_STRIPE_ENTRIES }, (_, j) => first + 2 * j + 1).find((i) => Atomics.load(big, i) > 0n)!;
    // A holder took the lock 1 s ago, put its marker in the key's entry, and died.
    const stamp = process.hrtime.bigint() - 100n * STALE_NS;
    Atomics.store(big, BIG_ROUTE + RL_LOCKS + stripe, stamp);
    Atomics.store(big, tat, -stamp);
    expect(table.routeLimitEntries(9)).toBe(0);
    // The next request takes the lock over and gives the key one entry again (its old bucket is lost).
    expect(limits.admit(9, 0, 'victim', T, T)).toBe(0);
    expect(Atomics.load(big, BIG_ROUTE + RL_LOCKS + stripe)).toBe(0n);
    expect(limits.admit(9, 0, 'victim', T, T)).toBeGreaterThan(0);
    expect([table.routeLimitEntries(9), table.routeLimitUntracked(9)]).toEqual([1, 0]);
  });

  test('arguments outside the table throw GH_ERR_ROUTE_LIMIT', () => {
    const table = StateTable.create();
    const bad: [number, number, bigint, bigint][] = [[64, 0, MS, MS], [-1, 0, MS, MS], [0, 256, MS, MS], [0, 1.5, MS, MS], [0, 0, 0n, MS], [0, 0, 2n * MS, MS]];
    for (const [slot, route, interval, burst] of bad) {
      expect(() => table.routeAdmit(slot, route, 'k', interval, burst)).toThrow(RouteLimitError);
      try {
        table.routeAdmit(slot, route, 'k', interval, burst);
      } catch (err) {
        expect((err as RouteLimitError).code).toBe('GH_ERR_ROUTE_LIMIT');
      }
    }
  });
});

describe('route rate limits across threads', () => {
  test('two threads hammering one key admit exactly burst + elapsed × rate (within 1)', async () => {
    const table = StateTable.create();
    const intervalNs = 5n * MS; // 200 per second
    // Tens of ms of draining the burst: both threads race on the cell for sure, any lost update shows.
    const burst = 100_000n;
    const go = new SharedArrayBuffer(4);
    const workers = [0, 1].map(
      () =>
        new Worker(new URL('./fixtures/route-limit-worker.ts', import.meta.url), {
          workerData: { mode: 'hammer', buffers: table.buffers, go, slot: 11, route: 4, keys: ['hot-key'], intervalNs, burstNs: burst * intervalNs, runMs: 400 },
        }),
    );
    const exited = Promise.all(workers.map((w) => once(w, 'exit')));
    await Promise.all(workers.map((w) => once(w, 'message')));
    type Report = { admitted: number; tries: number; firstBefore: bigint; firstAfter: bigint; lastBefore: bigint; lastAfter: bigint };
    const reports = Promise.all(workers.map(async (w) => (await once(w, 'message'))[0] as Report));
    Atomics.store(new Int32Array(go), 0, 1);
    Atomics.notify(new Int32Array(go), 0);
    const got = await reports;
    await exited;
    const admitted = got[0]!.admitted + got[1]!.admitted;
    const min = (a: bigint, b: bigint) => (a < b ? a : b);
    const max = (a: bigint, b: bigint) => (a > b ? a : b);
    const elapsed = (from: bigint, to: bigint) => Number(to - from) / Number(intervalNs);
    // The clock readings of the first admit and of the last (refused) try lie between the stamps
    // taken around those calls: exact GCRA admits no more than burst + elapsed × rate over the
    // widest window, and no fewer than that over the narrowest one, minus the one it was filling.
    const most = Number(burst) + elapsed(min(got[0]!.firstBefore, got[1]!.firstBefore), max(got[0]!.lastAfter, got[1]!.lastAfter));
    const least = Number(burst) + elapsed(min(got[0]!.firstAfter, got[1]!.firstAfter), max(got[0]!.lastBefore, got[1]!.lastBefore));
    expect(got[0]!.tries + got[1]!.tries).toBeGreaterThan(admitted + 10_000);
    expect(admitted).toBeLessThanOrEqual(most);
    expect(admitted).toBeGreaterThan(least - 1);
    expect(table.routeLimitEntries(11)).toBe(1);
    expect(table.routeLimitUntracked(11)).toBe(0);
  });

  test('threads churning keys crowded into one stripe leave one entry per key, no marker, the lock free', async () => {
    const table = StateTable.create();
    const limits = new RouteLimits(new BigInt64Array(table.buffers.big));
    // 96 keys for 64 entries, each idle about as long as it lives: entries expire and are claimed
    // again by other keys all the time, while the threads update the live ones.
    const keys = crowdedKeys(limits, 12, 0, 96);
    const go = new SharedArrayBuffer(4);
    // Both threads go over the keys in the same order: they meet on the same keys, claims included.
    const workers = [0, 1].map(
      () =>
        new Worker(new URL('./fixtures/route-limit-worker.ts', import.meta.url), {
          workerData: { mode: 'churn', buffers: table.buffers, go, slot: 12, route: 0, keys, intervalNs: 20_000n, burstNs: 40_000n, runMs: 300 },
        }),
    );
    const exited = Promise.all(workers.map((w) => once(w, 'exit')));
    await Promise.all(workers.map((w) => once(w, 'message')));
    const tries = Promise.all(workers.map(async (w) => (await once(w, 'message'))[0] as number));
    Atomics.store(new Int32Array(go), 0, 1);
    Atomics.notify(new Int32Array(go), 0);
    expect((await tries).every((n) => n > 10_000)).toBe(true);
    await exited;
    const stripe = limits.stripeOf(12, 0, keys[0]!);
    const big = new BigInt64Array(table.buffers.big);
    const i32 = new Int32Array(table.buffers.big);
    const first = BIG_ROUTE + RL_ENTRIES + 2 * stripe * RL_STRIPE_ENTRIES;
    const hashes = Array.from({ length: RL_STRIPE_ENTRIES }, (_, j) => `${i32[2 * (first + 2 * j)]}:${i32[2 * (first + 2 * j) + 1]}`);
    const tats = Array.from({ length: RL_STRIPE_ENTRIES }, (_, j) => big[first + 2 * j + 1]!);
    expect(new Set(hashes).size).toBe(RL_STRIPE_ENTRIES);
    expect(tats.filter((t) => t <= 0n)).toEqual([]);
    expect(big[BIG_ROUTE + RL_LOCKS + stripe]).toBe(0n);
    // Each key still has one bucket: a burst of 2, then a refusal.
    const T = 10n ** 12n;
    for (const k of keys.slice(0, 8)) {
      expect([limits.admit(12, 0, k, T, 2n * T), limits.admit(12, 0, k, T, 2n * T), limits.admit(12, 0, k, T, 2n * T) > 0]).toEqual([0, 0, true]);
    }
  });
});

/** The reference: GCRA in a Map, one TAT per (listener, route, key). */
class ReferenceGcra {
  readonly #tat = new Map<string, bigint>();
  admit(id: string, interval: bigint, burst: bigint, now: bigint): number {
    const tat = this.#tat.get(id) ?? 0n;
    const next = (tat > now ? tat : now) + interval;
    if (next - now > burst) return Number((next - now - burst + MS - 1n) / MS);
    this.#tat.set(id, next);
    return 0;
  }
}

/** Per route: (interval, burst) of a few shapes, from 1000 per second to 1 per 2 s. */
const SHAPES: [bigint, bigint][] = [
  [MS, MS],
  [7n * MS, 21n * MS],
  [100n * MS, 500n * MS],
  [2_000n * MS, 2_000n * MS],
];
const step = fc.oneof(fc.constant(0n), fc.bigInt({ min: 0n, max: 10n * MS }), fc.bigInt({ min: 0n, max: 3_000n * MS }));

describe('route rate limits match a Map-based GCRA (property)', () => {
  test('any sequence of (listener, route, key, time) admits on one thread', () => {
    const { limits } = fresh();
    // Each run starts later than the last one's entries can live: expired entries are as good as none.
    let base = T0;
    fc.assert(
      fc.property(fc.array(fc.record({ slot: fc.integer({ min: 0, max: 2 }), route: fc.integer({ min: 0, max: 3 }), key: fc.integer({ min: 0, max: 5 }), dt: step }), { maxLength: 200 }), (ops) => {
        const ref = new ReferenceGcra();
        let now = base;
        for (const op of ops) {
          now += op.dt;
          const [interval, burst] = SHAPES[op.route]!;
          const key = `client-${op.key}`;
          expect(limits.admit(op.slot, op.route, key, interval, burst, now)).toBe(ref.admit(`${op.slot}/${op.route}/${key}`, interval, burst, now));
        }
        base = now + 10_000n * MS;
      }),
      { numRuns: 200 },
    );
    expect([0, 1, 2].map((s) => limits.untracked(s))).toEqual([0, 0, 0]);
  });

  test('keys crowded into one stripe, taking each other\'s expired entries', () => {
    const { limits } = fresh();
    const keys = crowdedKeys(limits, 0, 2, 48);
    let base = T0;
    fc.assert(
      fc.property(fc.array(fc.record({ key: fc.integer({ min: 0, max: keys.length - 1 }), dt: step }), { maxLength: 300 }), (ops) => {
        const ref = new ReferenceGcra();
        let now = base;
        for (const op of ops) {
          now += op.dt;
          const [interval, burst] = SHAPES[2]!;
          expect(limits.admit(0, 2, keys[op.key]!, interval, burst, now)).toBe(ref.admit(keys[op.key]!, interval, burst, now));
        }
        base = now + 10_000n * MS;
      }),
      { numRuns: 200 },
    );
    expect(limits.untracked(0)).toBe(0);
  });
});
