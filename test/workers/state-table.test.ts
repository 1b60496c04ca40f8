import { Worker } from 'node:worker_threads';
import { once } from 'node:events';
import { describe, expect, test } from 'vitest';
import { B, L, LB, SlotAllocator, StateTable } from '../../src/workers/state-table.ts';

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
});
