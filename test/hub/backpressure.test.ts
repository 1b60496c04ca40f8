import { describe, expect, test } from 'vitest';
import { L } from '../../src/workers/state-table.ts';
import type { FromShard } from '../../src/workers/protocol.ts';
import { ShardHarness, TestClient, hubListener, hubListeners, liveClients, tokenFor, until } from './harness.ts';

const BIG = 'z'.repeat(60 * 1024);
const frame = (i: number) => JSON.stringify({ type: 'message', from: 'n1', data: { i, pad: BIG } });

/** Delivers `n` big frames to one user, acknowledged; resolves with how many were taken. */
async function push(h: ShardHarness, userId: string, from: number, n: number, ack: number): Promise<number> {
  let total = 0;
  for (let i = 0; i < n; i++) {
    const at = h.messages.length;
    h.send({ type: 'hub-deliver', listener: 'hub', to: { kind: 'user', userId }, frame: frame(from + i), ack: ack * 10_000 + i });
    const r = (await h.waitFor((m) => m.type === 'hub-delivered' && m.ack === ack * 10_000 + i, at)) as Extract<FromShard, { type: 'hub-delivered' }>;
    total += r.delivered;
  }
  return total;
}

describe('send queue (slow consumers)', () => {
  test('onOverflow close: a client that stops reading is closed with 1013 and counted; a fast client is not slowed', async () => {
    await using h = await ShardHarness.start({ listeners: [hubListener({}, { sendQueue: { maxMessages: 8, onOverflow: 'close' } })] });
    const slow = await TestClient.connect(h.hubPort, await tokenFor('slow'));
    const fast = await TestClient.connect(h.hubPort, await tokenFor('fast'));
    slow.ws.pause();
    const slowActor = liveClients().find((a) => a.clientId === slow.clientId)!;
    // Fill the kernel buffers, then the queue: push until the gateway gives up on it.
    let i = 0;
    while (h.table.listenerGet(0, 0, L.HUB_SLOW_CLOSED) === 0) {
      expect(i).toBeLessThan(2_000);
      await push(h, 'slow', i, 10, 1 + i);
      // The fast client gets its frames at once meanwhile.
      h.send({ type: 'hub-deliver', listener: 'hub', to: { kind: 'user', userId: 'fast' }, frame: JSON.stringify({ type: 'message', from: 'n1', data: i }) });
      await fast.next((f) => f.data === i);
      i += 10;
      expect(slowActor.queued).toBeLessThanOrEqual(8);
    }
    expect(slowActor.maxQueued).toBeLessThanOrEqual(8);
    expect(slowActor.state).toBe('closing');
    // The down is posted when the close starts, not when the slow peer finally reads it.
    expect(h.of('hub-client-down').filter((m) => m.clientId === slow.clientId)).toHaveLength(1);
    // Once closing, it takes nothing more.
    expect(await push(h, 'slow', 99_999, 1, 9_999)).toBe(0);
    slow.ws.resume();
    expect((await slow.closed).code).toBe(1013);
    await until(() => !liveClients().includes(slowActor));
    expect(h.of('hub-client-down').filter((m) => m.clientId === slow.clientId)).toHaveLength(1);
    expect(h.table.listenerGet(0, 0, L.HUB_SLOW_CLOSED)).toBe(1);
    expect(hubListeners()[0]!.clients.sizes()).toEqual({ byId: 1, user: 1, node: 0 });
    await fast.close();
  });

  test('onOverflow drop-oldest: the queue never holds more than maxMessages, drops are counted, the newest frames arrive in order', async () => {
    const max = 5;
    await using h = await ShardHarness.start({ listeners: [hubListener({}, { sendQueue: { maxMessages: max, onOverflow: 'drop-oldest' } })] });
    const slow = await TestClient.connect(h.hubPort, await tokenFor('slow'));
    slow.ws.pause();
    const actor = liveClients().find((a) => a.clientId === slow.clientId)!;
    let sent = 0;
    while (h.table.listenerGet(0, 0, L.HUB_DROP_QUEUE) < 20) {
      expect(sent).toBeLessThan(2_000);
      // Every frame is taken (queued): drop-oldest never refuses the newest.
      expect(await push(h, 'slow', sent, 10, 1 + sent)).toBe(10);
      sent += 10;
      expect(actor.queued).toBeLessThanOrEqual(max);
    }
    expect(actor.maxQueued).toBe(max);
    expect(actor.state).toBe('registered');
    const dropped = h.table.listenerGet(0, 0, L.HUB_DROP_QUEUE);
    slow.ws.resume();
    // Everything not dropped arrives, in order, ending with the last frame sent.
    await slow.next((f) => (f.data as { i?: number } | undefined)?.i === sent - 1, 0, 20_000);
    const got = slow.frames.filter((f) => f.type === 'message').map((f) => (f.data as { i: number }).i);
    expect(got).toEqual([...got].sort((a, b) => a - b));
    expect(got.length).toBe(sent - dropped);
    expect(got.slice(-max)).toEqual(Array.from({ length: max }, (_, k) => sent - max + k));
    expect(h.table.listenerGet(0, 0, L.HUB_OUT)).toBe(sent - dropped);
    expect(actor.queued).toBe(0);
    await slow.close();
  });
});
