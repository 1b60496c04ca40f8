import { describe, expect, test } from 'vitest';
import { ShardHarness, TestClient, hubListener, tokenFor, until } from './harness.ts';

const CLIENTS = 100;
const BROADCASTS = 400;

// A shard handles hub messages until a turn of its event loop spent HUB_TURN_BUDGET_MS on them,
// then yields; broadcasts that waited back to back leave together, one write per client.
describe('fan-out under a stream of broadcasts', () => {
  test('the shard thread keeps running its timers between deliveries; every client gets every frame in order, acks count every client', async () => {
    await using h = await ShardHarness.start({ listeners: [hubListener({}, { sendQueue: { maxMessages: 10_000, onOverflow: 'close' } })] });
    const clients = await Promise.all(Array.from({ length: CLIENTS }, async (_, i) => TestClient.connect(h.hubPort, await tokenFor(`u${i}`))));
    const done0 = h.table.hubDeliversDone(0);
    // The test and the shard share this thread: a timer here stands for the shard's heartbeat, its
    // socket drains and pings. A burst of broadcasts all queued at once (as a node at full speed
    // keeps the shard's port full) must not hold the thread until the last one is written.
    let last = performance.now();
    let maxGap = 0;
    const tick = setInterval(() => {
      const now = performance.now();
      maxGap = Math.max(maxGap, now - last);
      last = now;
    }, 2);
    const t0 = performance.now();
    last = t0;
    // Every 10th broadcast asks for an ack; every 50th is followed by a push to user u0 alone.
    const expected: unknown[] = [];
    for (let i = 0; i < BROADCASTS; i++) {
      h.send({ type: 'hub-deliver', listener: 'hub', to: { kind: 'all' }, frame: JSON.stringify({ type: 'message', from: 'n1', data: i }), ...(i % 10 === 0 && { ack: i }) });
      expected.push(i);
      if (i % 50 === 0) {
        h.send({ type: 'hub-deliver', listener: 'hub', to: { kind: 'user', userId: 'u0' }, frame: JSON.stringify({ type: 'message', from: 'n1', data: `u0-${i}` }) });
        expected.push(`u0-${i}`);
      }
    }
    const pushes = expected.length - BROADCASTS;
    try {
      await until(() => clients.every((c, k) => c.frames.length > BROADCASTS + (k === 0 ? pushes : 0)), 'every broadcast at every client', 15_000);
    } finally {
      clearInterval(tick);
    }
    const burstMs = performance.now() - t0;
    expect(clients[0]!.frames.slice(1).map((f) => f.data)).toEqual(expected);
    for (const c of clients.slice(1)) expect(c.frames.slice(1).map((f) => f.data)).toEqual(Array.from({ length: BROADCASTS }, (_, i) => i));
    expect(h.table.hubDeliversDone(0) - done0).toBe(expected.length);
    const acks = h.of('hub-delivered');
    expect(acks.map((a) => a.ack)).toEqual(Array.from({ length: BROADCASTS / 10 }, (_, i) => i * 10));
    for (const a of acks) expect(a.delivered).toBe(CLIENTS);
    // Handled in one go, the burst would stop the timer for most of its length.
    expect(maxGap).toBeLessThan(burstMs / 4);
    await Promise.all(clients.map((c) => c.close()));
  });
});
