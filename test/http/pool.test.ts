import { once } from 'node:events';
import { describe, expect, test } from 'vitest';
import { PoolError } from '../../src/http/pool.ts';
import { get, makePool, startBackend, type Exchange } from './pool-fixtures.ts';

/** An owner for raw acquires: the test drives the socket itself. */
const owner0 = (): Exchange => ({ head: '', got: [], size: 0, retried: false, conns: [], resolve: () => {}, reject: () => {} });

describe('upstream pool: reuse and limits', () => {
  test('the same socket serves two sequential requests', async () => {
    await using be = await startBackend();
    await using pool = makePool(be.port);
    const a = get(pool);
    expect(await a).toBe('conn-1');
    expect(a.ex.conns[0]!.reused).toBe(false);
    const b = get(pool);
    expect(await b).toBe('conn-1');
    expect(b.ex.conns[0]).toBe(a.ex.conns[0]);
    expect(b.ex.conns[0]!.reused).toBe(true);
    expect({ created: pool.created, reused: pool.reused, idle: pool.idle, busy: pool.busy }).toEqual({ created: 1, reused: 1, idle: 1, busy: 0 });
    expect(be.accepted).toBe(1);
  });

  test('idle sockets are reused last in, first out', async () => {
    await using be = await startBackend();
    await using pool = makePool(be.port);
    const owner = owner0();
    const [c1, c2, c3] = await Promise.all([pool.acquire(owner), pool.acquire(owner), pool.acquire(owner)]);
    pool.release(c1!);
    pool.release(c3!);
    pool.release(c2!);
    expect(pool.idle).toBe(3);
    expect(pool.tryAcquire(owner)).toBe(c2);
    expect(pool.tryAcquire(owner)).toBe(c3);
    expect(pool.tryAcquire(owner)).toBe(c1);
    expect(pool.tryAcquire(owner)).toBeUndefined();
    for (const c of [c1, c2, c3]) pool.release(c!);
  });

  test('maxConnections: callers wait in FIFO order, then pool_exhausted when the queue is full or the wait ends', async () => {
    await using be = await startBackend();
    await using pool = makePool(be.port, { maxConnections: 2, maxQueue: 2, queueTimeout: 50 });
    const owner = owner0();
    const c1 = await pool.acquire(owner);
    const c2 = await pool.acquire(owner);
    const order: number[] = [];
    const w1 = pool.acquire(owner).then((c) => (order.push(1), c));
    const w2 = pool.acquire(owner).then((c) => (order.push(2), c));
    await expect(pool.acquire(owner)).rejects.toMatchObject({ code: 'pool_exhausted' });
    expect(pool.queued).toBe(2);
    pool.release(c2);
    pool.release(c1);
    const [g1, g2] = await Promise.all([w1, w2]);
    expect(order).toEqual([1, 2]);
    expect(g1).toBe(c2);
    expect(g2).toBe(c1);
    expect(pool.busy).toBe(2);
    const late = pool.acquire(owner);
    await expect(late).rejects.toBeInstanceOf(PoolError);
    await expect(late).rejects.toMatchObject({ code: 'pool_exhausted' });
    expect(pool.queued).toBe(0);
    pool.release(g1);
    pool.release(g2);
    expect(pool.created).toBe(2);
  });

  test('a freed place (a discarded socket) goes to the next waiter as a new connect', async () => {
    await using be = await startBackend();
    await using pool = makePool(be.port, { maxConnections: 1 });
    const owner = owner0();
    const c1 = await pool.acquire(owner);
    const w = pool.acquire(owner);
    pool.discard(c1);
    const c2 = await w;
    expect(c2).not.toBe(c1);
    expect(c2.reused).toBe(false);
    pool.release(c2);
    expect(pool.created).toBe(2);
  });

  test('idleTimeout closes idle sockets with the pool timer; maxIdle caps those kept', async () => {
    await using be = await startBackend();
    await using pool = makePool(be.port, { idleTimeout: 30, maxIdle: 2 });
    const owner = owner0();
    const cs = await Promise.all([pool.acquire(owner), pool.acquire(owner), pool.acquire(owner)]);
    const closes = cs.map((c) => once(c.socket, 'close'));
    for (const c of cs) pool.release(c);
    expect(pool.idle).toBe(2);
    await Promise.all(closes);
    expect({ idle: pool.idle, busy: pool.busy, expired: pool.expired, closedByBackend: pool.closedByBackendWhileIdle }).toEqual({ idle: 0, busy: 0, expired: 3, closedByBackend: 0 });
  });

  test('a connect that fails rejects with connect_failed and frees its place', async () => {
    const be = await startBackend();
    const port = be.port;
    await be.close();
    await using pool = makePool(port, { maxConnections: 1 });
    await expect(pool.acquire(owner0())).rejects.toMatchObject({ code: 'connect_failed' });
    expect(pool.busy).toBe(0);
  });

  test('a released socket keeps the same listeners after many cycles (no leak)', async () => {
    await using be = await startBackend();
    await using pool = makePool(be.port, { maxConnections: 1 });
    const first = get(pool);
    await first;
    const s = first.ex.conns[0]!.socket;
    const counts = () => ['data', 'end', 'close', 'error', 'drain', 'timeout', 'connect'].map((e) => s.listenerCount(e));
    const before = counts();
    for (let i = 0; i < 300; i++) expect(await get(pool)).toBe('conn-1');
    expect(counts()).toEqual(before);
    expect(pool.created).toBe(1);
  });
});

describe('upstream pool: drain and close', () => {
  test('close() destroys idle sockets and waits for busy ones; destroy() ends them now; both idempotent', async () => {
    await using be = await startBackend();
    const pool = makePool(be.port);
    const owner = owner0();
    const [busy, idle] = await Promise.all([pool.acquire(owner), pool.acquire(owner)]);
    pool.release(idle);
    let closed = false;
    const done = pool.close().then(() => (closed = true));
    expect(pool.close()).toBe(pool.close());
    await once(idle.socket, 'close');
    await expect(pool.acquire(owner)).rejects.toMatchObject({ code: 'pool_closed' });
    expect(closed).toBe(false);
    pool.release(busy);
    await done;
    expect(busy.socket.destroyed).toBe(true);

    const pool2 = makePool(be.port);
    const c = await pool2.acquire(owner);
    await pool2.destroy();
    await pool2.destroy();
    expect(c.socket.destroyed).toBe(true);
    expect(pool2.busy + pool2.idle).toBe(0);
  });
});
