import { Worker } from 'node:worker_threads';
import { once } from 'node:events';
import pino from 'pino';
import { describe, expect, onTestFinished, test } from 'vitest';
import { B, IP, IP_STRIPE_ENTRIES, L, LB, SlotAllocator, StateTable, ipKey } from '../../src/workers/state-table.ts';
import { IP_LOCKS, IP_STRIPE_MASK, ipRegion } from '../../src/workers/state/layout.ts';

/** Starts `n` limit-racing threads (fixtures/limits-worker.ts), releases them together, and returns what each reported. */
async function race<T>(table: StateTable, data: Record<string, unknown>[]): Promise<T[]> {
  const go = new SharedArrayBuffer(4);
  const workers = data.map((d) => new Worker(new URL('./fixtures/limits-worker.ts', import.meta.url), { workerData: { buffers: table.buffers, go, ...d } }));
  const exited = Promise.all(workers.map((w) => once(w, 'exit')));
  await Promise.all(workers.map((w) => once(w, 'message')));
  const results = Promise.all(workers.map(async (w) => (await once(w, 'message'))[0] as T));
  Atomics.store(new Int32Array(go), 0, 1);
  Atomics.notify(new Int32Array(go), 0);
  const out = await results;
  await exited;
  return out;
}

/** Keys that all fall in one stripe (low 8 bits) with only 5 home entries between them: long probe runs. */
const crowded = (n: number, from = 1): number[] => Array.from({ length: n }, (_, i) => ((from + i) << 14) | (((from + i) % 5) << 8) | 7);

describe('the shared state table', () => {
  test('a listener-wide limit is exact across threads racing for it', async () => {
    const table = StateTable.create();
    const run = (shard: number) =>
      new Worker(new URL('./fixtures/acquire-worker.ts', import.meta.url), { workerData: { buffers: table.buffers, slot: 3, max: 1_000, tries: 50_000, shard } });
    const workers = [run(0), run(1)];
    const exited = Promise.all(workers.map((w) => once(w, 'exit')));
    const got = await Promise.all(workers.map(async (w) => (await once(w, 'message'))[0] as number));
    await exited;
    expect(got[0]! + got[1]!).toBe(1_000);
    expect(table.listenerActiveAll(3)).toBe(1_000);
    // Per-shard rows are summed by the main thread.
    expect(table.listenerSum(3, L.ACTIVE)).toBe(1_000);
    expect(table.listenerGet(0, 3, L.ACTIVE)).toBe(got[0]);
    for (let i = 0; i < 1_000; i++) table.listenerRelease(3);
    expect(table.listenerActiveAll(3)).toBe(0);
  });

  test('backends start healthy; compare-and-swap hands a permit to exactly one taker', () => {
    const table = StateTable.create();
    expect(table.backendGet(7, B.HEALTHY)).toBe(1);
    expect(table.backendCas(7, B.PERMIT, 0, 1)).toBe(true);
    expect(table.backendCas(7, B.PERMIT, 0, 1)).toBe(false);
    table.bytesAdd(1, 2, 3_000_000_000, 5);
    table.bytesAdd(1, 2, 3_000_000_000, 0);
    expect(table.bytesGet(1, 2, LB.BYTES_IN)).toBe(6_000_000_000);
    expect(table.bytesGet(1, 2, LB.BYTES_OUT)).toBe(5);
  });

  test('slots are stable by name, and a reused slot starts from zero', () => {
    const table = StateTable.create();
    const slots = new SlotAllocator(2, (s) => table.resetListener(s));
    const a = slots.get('a');
    const b = slots.get('b');
    expect(slots.get('a')).toBe(a);
    table.listenerAdd(0, a, L.OK, 5);
    slots.retain(['b']);
    const c = slots.get('c');
    expect(c).toBe(a);
    expect(table.listenerGet(0, c, L.OK)).toBe(0);
    expect(slots.get('b')).toBe(b);
    expect(() => slots.get('d')).toThrow(/state table full/);
  });

  test('a listener slot that is reused starts with a full bucket and no per-IP places', () => {
    const table = StateTable.create();
    const t = 10n ** 15n;
    expect(table.rateAdmit(2, t, t)).toBe(true);
    expect(table.rateAdmit(2, t, t)).toBe(false);
    const key = ipKey('10.0.0.1');
    expect(table.ipAcquire(2, 0, key, 5)).toBe(IP.ADMITTED);
    table.resetListener(2);
    expect(table.ipEntries(2)).toBe(0);
    expect(table.ipCount(2, key)).toBe(0);
    expect(table.rateAdmit(2, t, t)).toBe(true);
  });
});

describe('the rate limit (GCRA)', () => {
  test('admits exactly burst from two threads racing, with a tiny perSecond', async () => {
    const table = StateTable.create();
    const intervalNs = 10n ** 15n; // perSecond 1e-6: nothing refills during the test
    const got = await race<number>(table, [0, 1].map((shard) => ({ mode: 'rate', slot: 5, shard, tries: 20_000, intervalNs, burstNs: 25n * intervalNs })));
    expect(got[0]! + got[1]!).toBe(25);
    expect(table.rateAdmit(5, intervalNs, 25n * intervalNs)).toBe(false);
    // Other listeners have buckets of their own.
    expect(table.rateAdmit(6, intervalNs, intervalNs)).toBe(true);
  });

  test('starts full and refills at perSecond', async () => {
    const table = StateTable.create();
    const intervalNs = 2_000_000n; // 500 per second
    expect(table.rateAdmit(0, intervalNs, 2n * intervalNs)).toBe(true);
    expect(table.rateAdmit(0, intervalNs, 2n * intervalNs)).toBe(true);
    expect(table.rateAdmit(0, intervalNs, 2n * intervalNs)).toBe(false);
    await expect.poll(() => table.rateAdmit(0, intervalNs, 2n * intervalNs), { interval: 1 }).toBe(true);
  });
});

describe('per-IP places', () => {
  test('ipKey is a stable 32-bit hash, never 0', () => {
    expect(ipKey('127.0.0.1')).toBe(ipKey('127.0.0.1'));
    expect(ipKey('127.0.0.1')).not.toBe(ipKey('127.0.0.2'));
    expect(ipKey('')).not.toBe(0);
    expect(Number.isInteger(ipKey('::1'))).toBe(true);
  });

  test('are exact across threads racing for them, and all given back leaves no entry', async () => {
    const table = StateTable.create();
    const keys = crowded(30);
    const got = await race<number[]>(table, [0, 1].map((shard) => ({ mode: 'ip-hold', slot: 1, shard, tries: keys.length * 50, keys, max: 3 })));
    for (const [k, key] of keys.entries()) {
      expect(got[0]![k]! + got[1]![k]!).toBe(3);
      expect(table.ipCount(1, key)).toBe(3);
    }
    expect(table.ipUntracked(1)).toBe(0);
    for (const shard of [0, 1]) for (const [k, key] of keys.entries()) for (let i = 0; i < got[shard]![k]!; i++) table.ipRelease(1, shard, key);
    expect(table.ipEntries(1)).toBe(0);
    for (const key of keys) expect(table.ipCount(1, key)).toBe(0);
  });

  test('churn from two threads (acquire, release, backward-shift deletes) ends empty', async () => {
    const table = StateTable.create();
    const keys = crowded(30);
    const taken = await race<number>(table, [0, 1].map((shard) => ({ mode: 'ip-churn', slot: 4, shard, tries: 50_000, keys, max: 2, hold: 10 })));
    expect(taken[0]).toBeGreaterThan(0);
    expect(taken[1]).toBeGreaterThan(0);
    expect(table.ipEntries(4)).toBe(0);
    for (const key of keys) expect(table.ipCount(4, key)).toBe(0);
    expect(table.ipUntracked(4)).toBe(0);
  });

  test('a full stripe admits without a count (fails open) and counts that', () => {
    const table = StateTable.create();
    const keys = crowded(IP_STRIPE_ENTRIES + 1);
    for (const key of keys.slice(0, -1)) expect(table.ipAcquire(0, 0, key, 1)).toBe(IP.ADMITTED);
    expect(table.ipAcquire(0, 0, keys.at(-1)!, 1)).toBe(IP.UNTRACKED);
    expect(table.ipUntracked(0)).toBe(1);
    // A key already in the stripe is still limited.
    expect(table.ipAcquire(0, 0, keys[0]!, 1)).toBe(IP.REJECTED);
    for (const key of keys.slice(0, -1)) table.ipRelease(0, 0, key);
    expect(table.ipEntries(0)).toBe(0);
  });

  test("a dead shard's places are given back by the control plane, and only its own", async () => {
    const table = StateTable.create();
    const keys = crowded(20);
    for (const key of keys) expect(table.ipAcquire(3, 0, key, 10)).toBe(IP.ADMITTED);
    // Shard 1 takes places and ends without giving them back (its thread died).
    const [got] = await race<number[]>(table, [{ mode: 'ip-hold', slot: 3, shard: 1, tries: keys.length * 4, keys, max: 10 }]);
    expect(got!.every((n) => n === 4)).toBe(true);
    expect(table.ipCount(3, keys[0]!)).toBe(5);
    expect(table.ipReleaseShard(3, 1)).toBe(keys.length * 4);
    for (const key of keys) expect(table.ipCount(3, key)).toBe(1);
    expect(table.ipEntries(3)).toBe(keys.length);
    for (const key of keys) table.ipRelease(3, 0, key);
    expect(table.ipEntries(3)).toBe(0);
  });

  test('a shard killed inside a critical section leaves no lock and no count behind', async () => {
    const table = StateTable.create();
    const mine = crowded(10);
    for (const key of mine) expect(table.ipAcquire(7, 0, key, 1_000)).toBe(IP.ADMITTED);
    for (let round = 0; round < 8; round++) {
      const go = new SharedArrayBuffer(4);
      const w = new Worker(new URL('./fixtures/limits-worker.ts', import.meta.url), {
        workerData: { mode: 'ip-forever', buffers: table.buffers, go, slot: 7, shard: 1, tries: 0, keys: crowded(40), max: 1_000, hold: 5 },
      });
      const exited = once(w, 'exit');
      await once(w, 'message');
      const running = once(w, 'message');
      Atomics.store(new Int32Array(go), 0, 1);
      Atomics.notify(new Int32Array(go), 0);
      await running;
      // Terminated wherever it is: often with its stripe's lock held, in the middle of a move.
      await w.terminate();
      await exited;
      table.ipReleaseShard(7, 1);
      expect(table.ipEntries(7)).toBe(mine.length);
      for (const key of mine) expect(table.ipCount(7, key)).toBe(1);
      // The stripe is usable: its lock is free.
      expect(table.ipAcquire(7, 0, mine[0]!, 1_000)).toBe(IP.ADMITTED);
      table.ipRelease(7, 0, mine[0]!);
    }
    for (const key of mine) table.ipRelease(7, 0, key);
    expect(table.ipEntries(7)).toBe(0);
  });
  test('a dead shard\'s connections are taken off its backends, the live shards\' stay', () => {
    const table = StateTable.create();
    table.backendActiveAdd(0, 5, 1);
    table.backendActiveAdd(1, 5, 1);
    table.backendActiveAdd(1, 5, 1);
    table.backendActiveAdd(1, 9, 1);
    expect(table.backendGet(5, B.ACTIVE)).toBe(3);
    expect(table.backendReleaseShard(1)).toBe(3);
    expect([table.backendGet(5, B.ACTIVE), table.backendGet(9, B.ACTIVE)]).toEqual([1, 0]);
    expect([table.backendShardActive(1, 5), table.backendShardActive(0, 5)]).toEqual([0, 1]);
    table.backendActiveAdd(0, 5, -1);
    expect(table.backendGet(5, B.ACTIVE)).toBe(0);
  });

  test('a retired row is handed to a new name only once nothing counts on it; a returning name gets its row back', () => {
    const table = StateTable.create();
    const slots = new SlotAllocator(4, (s) => table.resetBackend(s), (s) => table.backendGet(s, B.ACTIVE) === 0);
    const b = slots.get('app/b');
    table.backendActiveAdd(0, b, 1);
    slots.retain(['app/a']);
    expect(slots.retired).toBe(1);
    expect(slots.used()).toContain(b);
    const e = slots.get('app/e');
    expect(e).not.toBe(b);
    // The old connection ends: its row is idle, and the next new name may have it.
    table.backendActiveAdd(0, b, -1);
    expect(slots.retired).toBe(0);
    expect(table.backendGet(e, B.ACTIVE)).toBe(0);
    // A name removed and added back while draining keeps its row and its count.
    table.backendActiveAdd(0, e, 1);
    slots.retain([]);
    expect(slots.get('app/e')).toBe(e);
    expect(table.backendGet(e, B.ACTIVE)).toBe(1);
    table.backendActiveAdd(0, e, -1);
  });
});

/** The index of `key`'s stripe lock in the listener at `slot` (what a shard spins on). */
const lockOf = (slot: number, key: number): number => ipRegion(slot) + IP_LOCKS + (key & IP_STRIPE_MASK);

/**
 * Another thread takes the stripe lock at `lock` as `owner` (a shard's index + 1) and keeps it for
 * `holdMs` (a preempted or stuck holder), then frees it. Resolves once the lock is held; `freed`
 * resolves when the thread has freed it and exited.
 */
async function holdLock(table: StateTable, lock: number, owner: number, holdMs: number): Promise<{ freed: Promise<unknown> }> {
  const code = `
    const { workerData: d, parentPort } = require('node:worker_threads');
    const a = new Int32Array(d.i32);
    if (Atomics.compareExchange(a, d.lock, 0, d.owner) !== 0) throw new Error('lock busy');
    parentPort.postMessage('held');
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, d.holdMs);
    Atomics.store(a, d.lock, 0);`;
  const w = new Worker(code, { eval: true, workerData: { i32: table.buffers.i32, lock, owner, holdMs } });
  const freed = once(w, 'exit');
  await once(w, 'message');
  return { freed };
}

/** A pino logger whose lines are parsed into `lines`. */
function captureLog(): { log: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  return { log: pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) }), lines };
}

describe('per-IP places are never lost behind a busy stripe lock', () => {
  test('a release while another shard holds the stripe lock for over 1 s is queued, counted, logged once, and given back once the lock is free', async () => {
    const { log, lines } = captureLog();
    const table = StateTable.create().logTo(log);
    const key = ipKey('10.1.2.3');
    expect(table.ipAcquire(6, 0, key, 5)).toBe(IP.ADMITTED);
    expect(table.ipAcquire(6, 0, key, 5)).toBe(IP.ADMITTED);
    // Shard 1 (owner 2) keeps the stripe's lock for 1.2 s: longer than a release ever waited.
    const holder = await holdLock(table, lockOf(6, key), 2, 1_200);
    table.ipRelease(6, 0, key);
    table.ipRelease(6, 0, key);
    // Not given back yet (the lock is held), but queued, not dropped.
    expect(table.ipCount(6, key)).toBe(2);
    expect(table.ipDeferred(6)).toEqual({ deferred: 2, pending: 2 });
    const warned = lines.filter((l) => l.msg === 'per-IP release: stripe lock busy, the place is given back once free');
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatchObject({ level: 40, slot: 6, shard: 0, lockHolder: 'shard 1', deferred: 1 });
    await holder.freed;
    await expect.poll(() => table.ipCount(6, key), { timeout: 2_000 }).toBe(0);
    expect(table.ipDeferred(6)).toEqual({ deferred: 2, pending: 0 });
    expect(table.nonZero().perIp).toEqual([]);
  });

  test('on a shard thread: a release outwaits a preempted holder for up to 1 s, and past that is queued and given back by the thread\'s own retry', async () => {
    const table = StateTable.create();
    const key = ipKey('10.4.4.4');
    expect(table.ipAcquire(5, 0, key, 5)).toBe(IP.ADMITTED);
    expect(table.ipAcquire(5, 0, key, 5)).toBe(IP.ADMITTED);
    /** A shard-0 thread gives one place back while another thread (shard 1) holds the lock for `holdMs`. */
    const releaseWhileHeld = async (holdMs: number) => {
      const go = new SharedArrayBuffer(4);
      const w = new Worker(new URL('./fixtures/release-worker.ts', import.meta.url), { workerData: { buffers: table.buffers, go, slot: 5, shard: 0, key } });
      onTestFinished(() => void w.terminate());
      await once(w, 'message');
      const holder = await holdLock(table, lockOf(5, key), 2, holdMs);
      const reported = once(w, 'message');
      Atomics.store(new Int32Array(go), 0, 1);
      Atomics.notify(new Int32Array(go), 0);
      const report = (await reported)[0] as { blockedMs: number; deferred: number; pending: number };
      return { w, holder, report };
    };
    // A holder for 300 ms (preempted): the release outwaits it and gives the place back itself.
    let { w, holder, report } = await releaseWhileHeld(300);
    expect(report).toMatchObject({ deferred: 0, pending: 0 });
    expect(report.blockedMs).toBeGreaterThan(150);
    expect(table.ipCount(5, key)).toBe(1);
    w.postMessage('stop');
    await Promise.all([once(w, 'exit'), holder.freed]);
    // A holder for 2 s (stuck): after 1 s the release is queued, and the thread's retry gives it back.
    ({ w, holder, report } = await releaseWhileHeld(2_000));
    expect(report).toMatchObject({ deferred: 1, pending: 1 });
    expect(report.blockedMs).toBeGreaterThanOrEqual(1_000);
    expect(table.ipCount(5, key)).toBe(1);
    await holder.freed;
    await expect.poll(() => table.ipCount(5, key), { timeout: 2_000 }).toBe(0);
    expect(table.ipDeferred(5)).toEqual({ deferred: 1, pending: 0 });
    w.postMessage('stop');
    await once(w, 'exit');
  });

  test('a queued release counts before the next acquire of its stripe: the limit never sees a place that was given back', () => {
    const table = StateTable.create();
    const key = ipKey('10.9.9.9');
    const lock = lockOf(2, key);
    const i32 = new Int32Array(table.buffers.i32);
    expect(table.ipAcquire(2, 0, key, 2)).toBe(IP.ADMITTED);
    expect(table.ipAcquire(2, 0, key, 2)).toBe(IP.ADMITTED);
    // A holder that is not this thread (shard 3) keeps the lock while shard 0 gives a place back.
    Atomics.store(i32, lock, 4);
    table.ipRelease(2, 0, key);
    expect(table.ipDeferred(2).pending).toBe(1);
    Atomics.store(i32, lock, 0);
    // Synchronously, before any retry timer: the acquire applies the queued release first.
    expect(table.ipAcquire(2, 0, key, 2)).toBe(IP.ADMITTED);
    expect(table.ipCount(2, key)).toBe(2);
    expect(table.ipDeferred(2).pending).toBe(0);
    table.ipRelease(2, 0, key);
    table.ipRelease(2, 0, key);
    expect(table.nonZero().perIp).toEqual([]);
  });

  test("a dead shard's places in a stripe that a live shard holds for over 1 s are given back once it is free, and only the dead shard's", async () => {
    const { log, lines } = captureLog();
    const table = StateTable.create().logTo(log);
    const [busy, other] = [ipKey('10.0.0.7'), ipKey('10.0.0.8')];
    expect(busy & IP_STRIPE_MASK).not.toBe(other & IP_STRIPE_MASK);
    // Shard 1 dies holding places in two stripes; shard 0 has one in the busy stripe.
    for (const key of [busy, busy, other]) expect(table.ipAcquire(4, 1, key, 10)).toBe(IP.ADMITTED);
    expect(table.ipAcquire(4, 0, busy, 10)).toBe(IP.ADMITTED);
    // Shard 2 (owner 3, alive) keeps the busy stripe's lock for 1.2 s.
    const holder = await holdLock(table, lockOf(4, busy), 3, 1_200);
    // The free stripe is done at once; the busy one is queued.
    expect(table.ipReleaseShard(4, 1)).toBe(1);
    expect(table.ipCount(4, other)).toBe(0);
    expect(table.ipCount(4, busy)).toBe(3);
    expect(table.ipDeferred(4)).toEqual({ deferred: 1, pending: 1 });
    expect(lines.filter((l) => l.msg === 'per-IP places of a dead shard: stripe lock busy, given back once free')).toHaveLength(1);
    await holder.freed;
    await expect.poll(() => table.ipCount(4, busy), { timeout: 2_000 }).toBe(1);
    expect(table.nonZero().perIp).toEqual([{ slot: 4, key: busy, shard: 0, count: 1 }]);
    expect(table.ipDeferred(4).pending).toBe(0);
    table.ipRelease(4, 0, busy);
    expect(table.nonZero().perIp).toEqual([]);
  });
});

describe('nonZero: what is still counted', () => {
  test('lists every non-zero listener, per-IP and backend count, and nothing once all is given back', () => {
    const table = StateTable.create();
    expect(table.nonZero()).toEqual({ listeners: [], perIp: [], backends: [] });
    const key = ipKey('192.0.2.1');
    table.listenerAdd(1, 3, L.ACTIVE, 2);
    table.listenerAdd(1, 3, L.OK, 7); // outcome counters are totals, not open connections
    expect(table.listenerAcquire(3, 10)).toBe(true);
    expect(table.listenerAcquire(3, 10)).toBe(true);
    expect(table.ipAcquire(3, 1, key, 5)).toBe(IP.ADMITTED);
    expect(table.ipAcquire(3, 1, key, 5)).toBe(IP.ADMITTED);
    expect(table.ipAcquire(3, 0, key, 5)).toBe(IP.ADMITTED);
    table.backendActiveAdd(1, 900, 1);
    expect(table.nonZero()).toEqual({
      listeners: [
        { slot: 3, shard: 1, active: 2 },
        { slot: 3, shard: 'all', active: 2 },
      ],
      perIp: expect.arrayContaining([
        { slot: 3, key, shard: 1, count: 2 },
        { slot: 3, key, shard: 0, count: 1 },
      ]),
      backends: [
        { slot: 900, shard: 1, active: 1 },
        { slot: 900, shard: 'all', active: 1 },
      ],
    });
    expect(table.nonZero().perIp).toHaveLength(2);
    table.listenerAdd(1, 3, L.ACTIVE, -2);
    table.listenerRelease(3, 2);
    table.ipRelease(3, 1, key);
    table.ipRelease(3, 1, key);
    table.ipRelease(3, 0, key);
    table.backendActiveAdd(1, 900, -1);
    expect(table.nonZero()).toEqual({ listeners: [], perIp: [], backends: [] });
  });
});
