/**
 * Message recovery across instances: pushes to a user are kept in a bounded Redis stream per user
 * (`history`), each message carries its `epoch` and `offset`, and a client that reconnects (to
 * any instance) with `resume` gets what it missed, in order, or `resume-failed`.
 */
import { describe, expect, test } from 'vitest';
import { tempDir, until } from '../helpers/daemon.ts';
import { HubNode } from '../helpers/hub-node.ts';
import { RedisServer } from '../helpers/redis.ts';
import { Client, type Frame, startInstances } from './hub-harness.ts';

const messages = (c: Client) => c.frames.filter((f) => f.type === 'message');

async function resume(c: Client, epoch: unknown, offset: unknown): Promise<Frame[]> {
  const from = c.frames.length;
  c.ws.send(JSON.stringify({ type: 'resume', epoch, offset }));
  await until(() => c.frames.slice(from).some((f) => f.type === 'resumed' || f.type === 'resume-failed'), 5_000, 'resume answered');
  return c.frames.slice(from);
}

describe('hub cluster: message recovery', () => {
  test('a client reconnecting to another instance resumes what it missed, in order; trimmed history, another epoch or a bad frame', async () => {
    await using redis = await RedisServer.start();
    await using node = await HubNode.start();
    using dir = tempDir();
    const [a, b] = await startInstances(dir, redis.url, 2, { node: node.url, history: '{ size: 5, ttl: 1m }' });
    await node.waitFor((f) => f.type === 'hello');

    const first = await Client.connect(b!.port('hub'), 'u1');
    // The welcome says where the user's history starts: nothing yet, a new epoch.
    const welcome = first.frames[0]!;
    expect(welcome).toMatchObject({ type: 'welcome', offset: 0 });
    for (const d of ['m1', 'm2', 'm3']) node.push({ userId: 'u1', data: d });
    await first.got('m3');
    const got = messages(first);
    expect(got.map((f) => [f.data, f.offset])).toEqual([
      ['m1', 1],
      ['m2', 2],
      ['m3', 3],
    ]);
    const epoch = got[0]!.epoch;
    expect(epoch).toBe(welcome.epoch);
    expect(got.every((f) => f.epoch === epoch && f.from === 'n1')).toBe(true);
    // A broadcast is not kept: no offset.
    node.broadcast('all');
    expect((await first.got('all')).offset).toBeUndefined();
    await first.close();

    // Missed while away: m4 and m5. Back on the other instance, resumed from offset 3.
    node.push({ userId: 'u1', data: 'm4' });
    node.push({ userId: 'u1', data: 'm5' });
    const back = await Client.connect(a!.port('hub'), 'u1');
    const recovered = await until(async () => {
      const r = await resume(back, epoch, 3);
      // m4 and m5 may still be on their way into the stream: ask again until both are there.
      return r.filter((f) => f.type === 'message').length === 2 ? r : undefined;
    }, 5_000, 'm4 and m5 recovered');
    expect(recovered!.map((f) => (f.type === 'message' ? [f.data, f.offset] : [f.type, f.offset]))).toEqual([
      ['m4', 4],
      ['m5', 5],
      ['resumed', 5],
    ]);
    // Nothing missed: just resumed.
    expect((await resume(back, epoch, 5)).map((f) => f.type)).toEqual(['resumed']);

    // More than `size` missed: the oldest are trimmed, so the gap cannot be filled.
    for (let i = 6; i <= 12; i++) node.push({ userId: 'u1', data: `m${i}` });
    await back.got('m12');
    expect((await resume(back, epoch, 5)).map((f) => f.type)).toEqual(['resume-failed']);
    // Another epoch (the stream expired, or Redis lost it), an offset from the future.
    expect((await resume(back, 'nope', 5)).map((f) => f.type)).toEqual(['resume-failed']);
    expect((await resume(back, epoch, 99)).map((f) => f.type)).toEqual(['resume-failed']);
    // A malformed resume is a bad_request, and the client stays.
    back.ws.send(JSON.stringify({ type: 'resume', epoch, offset: -1 }));
    await until(() => back.frames.some((f) => f.type === 'error' && f.code === 'bad_request'), 5_000, 'bad_request');
    node.push({ userId: 'u1', data: 'still' });
    expect((await back.got('still')).offset).toBe(13);

    // A client that got nothing but its welcome resumes from there.
    const quiet = await Client.connect(b!.port('hub'), 'u2');
    const from = quiet.frames[0]!;
    expect(from).toMatchObject({ type: 'welcome', offset: 0 });
    await quiet.close();
    node.push({ userId: 'u2', data: 'q1' });
    node.push({ userId: 'u2', data: 'q2' });
    const again = await Client.connect(a!.port('hub'), 'u2');
    expect(again.frames[0]).toMatchObject({ type: 'welcome', epoch: from.epoch });
    const missed = await until(async () => {
      const r = await resume(again, from.epoch, 0);
      return r.filter((f) => f.type === 'message').length === 2 ? r : undefined;
    }, 5_000, 'q1 and q2 recovered');
    expect(missed!.map((f) => f.data ?? f.type)).toEqual(['q1', 'q2', 'resumed']);

    await again.close();
    await back.close();
    for (const d of [a, b]) expect(await d!.stop()).toBe(0);
  }, 30_000);
});
