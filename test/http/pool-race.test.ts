import { describe, expect, test } from 'vitest';
import { get, makePool, startBackend } from './pool-fixtures.ts';

describe('upstream pool: the keep-alive race', () => {
  test('a backend closing idle sockets after a random short keep-alive: 2,000 requests, zero failures', async () => {
    await using be = await startBackend({ keepAlive: [0, 3] });
    await using pool = makePool(be.port, { maxConnections: 16, idleTimeout: 1_000 });
    let ok = 0;
    let failed = 0;
    let retried = 0;
    // 8 concurrent loops of sequential requests, plus bursts of parallel ones.
    const loop = async (n: number) => {
      for (let i = 0; i < n; i++) {
        const r = get(pool);
        await r.then(() => ok++, () => failed++);
        if (r.ex.retried) retried++;
        if (i % 25 === 0) {
          const burst = Array.from({ length: 6 }, () => get(pool));
          await Promise.all(burst.map((p) => p.then(() => ok++, () => failed++)));
          retried += burst.filter((p) => p.ex.retried).length;
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, () => loop(210)));
    expect(failed).toBe(0);
    expect(ok).toBeGreaterThanOrEqual(2_000);
    expect(retried).toBeGreaterThan(0); // the race did happen: reused sockets failed before any byte
    expect(pool.busy).toBe(0);
  });

  test('a reset of a reused socket before any response byte is retried on a fresh socket', async () => {
    await using be = await startBackend({ resetOnRequest: 2 });
    await using pool = makePool(be.port);
    expect(await get(pool)).toBe('conn-1');
    const r = get(pool);
    expect(await r).toBe('conn-2');
    expect(r.ex.retried).toBe(true);
    expect(r.ex.conns.map((c) => c.reused)).toEqual([true, false]);
    expect(be.accepted).toBe(2);
  });

  test('a reset after some response bytes is not retried: the error is surfaced', async () => {
    await using be = await startBackend({ resetAfterBytes: true });
    await using pool = makePool(be.port);
    const r = get(pool);
    await expect(r).rejects.toMatchObject({ code: 'ECONNRESET' });
    expect(r.ex.retried).toBe(false);
    expect(be.requests).toBe(1);
    expect(pool.busy + pool.idle).toBe(0);
  });

  test('a reset on a fresh socket before any byte is not retried (the backend may have processed it)', async () => {
    await using be = await startBackend({ resetOnRequest: 1 });
    await using pool = makePool(be.port);
    const r = get(pool);
    await expect(r).rejects.toMatchObject({ code: 'ECONNRESET' });
    expect(r.ex.retried).toBe(false);
  });

  test('an idle socket the backend closes is dropped at once and counted', async () => {
    await using be = await startBackend({ keepAlive: [1, 1] });
    await using pool = makePool(be.port);
    expect(await get(pool)).toBe('conn-1');
    await expect.poll(() => pool.closedByBackendWhileIdle, { timeout: 2_000 }).toBe(1);
    expect(pool.idle).toBe(0);
    expect(await get(pool)).toBe('conn-2');
  });
});
