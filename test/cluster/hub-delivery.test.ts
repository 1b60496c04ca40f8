/**
 * The hub across three instances (child processes, `workers: 1`) sharing a private Redis; the
 * node is dialled by gw-a only. Its pushes and broadcasts reach the clients of every instance,
 * and it hears presence for users on any instance.
 */
import { describe, expect, test } from 'vitest';
import { tempDir, until } from '../helpers/daemon.ts';
import { HubNode } from '../helpers/hub-node.ts';
import { RedisServer } from '../helpers/redis.ts';
import { Client, linked, startInstances } from './hub-harness.ts';

describe('hub cluster: delivery across instances', () => {
  test('push to a user with clients on two other instances reaches both; push to a client elsewhere; broadcast reaches every client; acks count this instance', async () => {
    await using redis = await RedisServer.start();
    await using node = await HubNode.start();
    using dir = tempDir();
    const [a, b, c] = await startInstances(dir, redis.url, 3, { node: node.url });
    await node.waitFor((f) => f.type === 'hello' && f.gateId === 'gw-a');

    const onB = await Client.connect(b!.port('hub'), 'u1');
    const onC = await Client.connect(c!.port('hub'), 'u1');
    const other = await Client.connect(c!.port('hub'), 'u2');
    const local = await Client.connect(a!.port('hub'), 'u3');
    // The node (on gw-a) hears u1 come online once, though u1 has no client on gw-a.
    await node.waitFor((f) => f.type === 'presence' && f.userId === 'u1' && f.online === true);

    node.push({ userId: 'u1', data: 'to-u1' });
    await onB.got('to-u1');
    await onC.got('to-u1');
    node.push({ clientId: other.clientId, data: 'to-client' });
    await other.got('to-client');
    node.broadcast('to-all', 'b1');
    for (const cl of [onB, onC, other, local]) await cl.got('to-all');
    // The ack counts the clients of the instance the node's stream belongs to (docs/cluster.md).
    expect(await node.waitFor((f) => f.type === 'ack' && f.id === 'b1')).toEqual({ type: 'ack', id: 'b1', delivered: 1 });
    // Nobody else got what was not theirs.
    expect(other.frames.filter((f) => f.type === 'message').map((f) => f.data)).toEqual(['to-client', 'to-all']);
    expect(local.frames.filter((f) => f.type === 'message').map((f) => f.data)).toEqual(['to-all']);
    expect(onB.frames.filter((f) => f.type === 'message').map((f) => f.data)).toEqual(['to-u1', 'to-all']);
    expect(node.frames('presence').filter((f) => f.userId === 'u1')).toEqual([{ type: 'presence', userId: 'u1', online: true }]);

    for (const cl of [onB, onC, other, local]) await cl.close();
    await node.waitFor((f) => f.type === 'presence' && f.userId === 'u1' && f.online === false);
    await node.waitFor((f) => f.type === 'presence' && f.userId === 'u2' && f.online === false);
    expect(node.frames('presence').filter((f) => f.userId === 'u1').map((f) => f.online)).toEqual([true, false]);
    for (const d of [a, b, c]) expect(await d!.stop()).toBe(0);
  }, 30_000);

  test('Redis stopped mid-run: each instance keeps delivering to its own clients; once Redis is back, delivery and presence work across instances again', async () => {
    await using redis = await RedisServer.start();
    await using node = await HubNode.start();
    using dir = tempDir();
    const [a, b] = await startInstances(dir, redis.url, 2, { node: node.url });
    await node.waitFor((f) => f.type === 'hello');
    const onA = await Client.connect(a!.port('hub'), 'u1');
    const onB = await Client.connect(b!.port('hub'), 'u1');
    node.push({ userId: 'u1', data: 'before' });
    await onA.got('before');
    await onB.got('before');

    await redis.stop();
    await a!.waitForLog((l) => String(l.msg).startsWith('hub: redis down'));
    node.push({ userId: 'u1', data: 'while-down' });
    await onA.got('while-down');
    // A user that comes and goes on gw-b meanwhile: gw-a cannot know.
    const lateB = await Client.connect(b!.port('hub'), 'late');
    expect(onB.frames.some((f) => f.data === 'while-down')).toBe(false);

    await redis.restart();
    // Each instance writes its users again: the node learns `late` is online, and delivery crosses again.
    await node.waitFor((f) => f.type === 'presence' && f.userId === 'late' && f.online === true, 10_000);
    await until(async () => {
      node.push({ userId: 'late', data: 'after' });
      return lateB.frames.some((f) => f.data === 'after');
    }, 10_000, 'delivery across instances after the restart');
    for (const d of [a, b]) {
      expect(d!.logs.filter((l) => String(l.msg).startsWith('hub: redis down')).length).toBe(1);
      expect(d!.logs.filter((l) => String(l.msg).startsWith('hub: redis up')).length).toBe(2);
    }
    for (const cl of [onA, onB, lateB]) await cl.close();
    for (const d of [a, b]) expect(await d!.stop()).toBe(0);
  }, 30_000);
});

describe('hub cluster: Redis down at start, then paused', () => {
  test('down at start: each instance serves alone (local delivery, local cap); Redis comes: linked; a paused Redis: local clients served, admissions not held up; resumed: across instances again', async () => {
    await using redis = await RedisServer.start();
    await redis.stop();
    await using node = await HubNode.start();
    using dir = tempDir();
    const [a, b] = await startInstances(dir, redis.url, 2, { node: node.url, maxClientsPerUser: 1, redisDown: true });
    await node.waitFor((f) => f.type === 'hello');
    // The local cap only: u1 is admitted on each instance.
    const onA = await Client.connect(a!.port('hub'), 'u1');
    const onB = await Client.connect(b!.port('hub'), 'u1');
    node.push({ userId: 'u1', data: 'alone' });
    await onA.got('alone');

    await redis.restart();
    await linked(a!, 2);
    await linked(b!, 2);
    await until(async () => {
      node.push({ userId: 'u1', data: 'linked' });
      return onB.frames.some((f) => f.data === 'linked');
    }, 10_000, 'delivery across instances once Redis came');
    // The counts were written when Redis came: u1 has 2 clients, one more is refused anywhere.
    expect(await Client.status(b!.port('hub'), 'u1')).toBe(429);

    // Paused (answers nothing): the local client still gets pushes at once, and an admission
    // waits at most about a second for Redis before the local cap decides.
    redis.pause(true);
    node.push({ userId: 'u1', data: 'paused' });
    await onA.got('paused', 1_000);
    const t0 = Date.now();
    const u2 = await Client.connect(a!.port('hub'), 'u2');
    expect(Date.now() - t0).toBeLessThan(2_500);
    await a!.waitForLog((l) => String(l.msg).startsWith('hub: redis down'), 5_000);

    redis.pause(false);
    await linked(a!, 2);
    await linked(b!, 2);
    await until(async () => {
      node.push({ userId: 'u1', data: 'resumed' });
      return onB.frames.some((f) => f.data === 'resumed');
    }, 10_000, 'delivery across instances after the pause');
    expect(a!.logs.filter((l) => String(l.msg).startsWith('hub: redis down')).length).toBe(1);
    for (const c of [onA, onB, u2]) await c.close();
    for (const d of [a, b]) expect(await d!.stop()).toBe(0);
  }, 30_000);
});
