/**
 * Presence and the per-user cap across three instances sharing a private Redis: a user is online
 * while any instance holds a client of it, a user moving between instances within the grace
 * makes no offline/online pair, a `kill -9`ed instance's users go offline within `deadAfter`, and
 * `maxClientsPerUser` counts the clients of every instance.
 */
import { describe, expect, test } from 'vitest';
import { tempDir, until } from '../helpers/daemon.ts';
import { HubNode } from '../helpers/hub-node.ts';
import { RedisServer } from '../helpers/redis.ts';
import { Client, linked, startInstances } from './hub-harness.ts';

const presence = (node: HubNode, userId: string, conn?: number) =>
  node.received.filter((r) => r.frame.type === 'presence' && r.frame.userId === userId && (conn === undefined || r.conn === conn)).map((r) => r.frame.online);

describe('hub cluster: presence and the per-user cap', () => {
  test('online while any instance holds the user; a move within the grace does not flap; kill -9 of an instance: its users go offline within deadAfter', async () => {
    await using redis = await RedisServer.start();
    await using node = await HubNode.start();
    using dir = tempDir();
    // Every instance dials the node: each of its three sessions hears each change once.
    const [a, b, c] = await startInstances(dir, redis.url, 3, { node: node.url, nodeOnAll: true, grace: '500ms' });
    await until(() => new Set(node.frames('hello').map((f) => f.gateId)).size === 3, 5_000, 'three sessions');
    // The session (node connection) of each instance: its latest hello.
    const session = (gateId: string) => node.received.findLast((r) => r.frame.type === 'hello' && r.frame.gateId === gateId)!.conn;
    const conns = [session('gw-a'), session('gw-b'), session('gw-c')];
    const survivors = [session('gw-a'), session('gw-b')];

    // `mover` on gw-b, then on gw-c within the grace.
    const first = await Client.connect(b!.port('hub'), 'mover');
    await until(() => conns.every((k) => presence(node, 'mover', k).length === 1), 5_000, 'mover online on every session');
    await first.close();
    const second = await Client.connect(c!.port('hub'), 'mover');
    // `stay` on gw-c only, and `both` on gw-a and gw-c.
    await Client.connect(c!.port('hub'), 'stay');
    const bothA = await Client.connect(a!.port('hub'), 'both');
    await Client.connect(c!.port('hub'), 'both');
    await until(() => conns.every((k) => presence(node, 'stay', k).length === 1 && presence(node, 'both', k).length === 1), 5_000, 'stay and both online');
    // gw-b's grace for mover passed (gw-b has no user left): no offline/online pair anywhere.
    await until(async () => (await b!.json<{ listeners: { usersOnline: number }[] }>('/hub')).listeners[0]!.usersOnline === 0, 5_000, 'gw-b grace over');
    for (const k of conns) expect(presence(node, 'mover', k)).toEqual([true]);

    // kill -9 of gw-c: stay and mover go offline within deadAfter (1 s, plus a heartbeat and the grace);
    // both stays online (gw-a holds it).
    const killedAt = Date.now();
    c!.child.kill('SIGKILL');
    await c!.exited;
    c!.skipIdleCheck = 'killed';
    for (const k of survivors) {
      await until(() => presence(node, 'stay', k).length === 2 && presence(node, 'mover', k).length === 2, 5_000, `offline on session ${k}`);
    }
    expect(Date.now() - killedAt).toBeLessThan(3_000);
    for (const k of survivors) {
      expect(presence(node, 'stay', k)).toEqual([true, false]);
      expect(presence(node, 'mover', k)).toEqual([true, false]);
      expect(presence(node, 'both', k)).toEqual([true]);
    }
    await linked(a!, 2);
    // A push to `both` still reaches its client on gw-a.
    node.push({ userId: 'both', data: 'still' });
    await bothA.got('still');
    await second.closed;
    await bothA.close();
    await until(() => survivors.every((k) => presence(node, 'both', k).length === 2), 5_000, 'both offline');
    for (const d of [a, b]) expect(await d!.stop()).toBe(0);
  }, 30_000);

  test('maxClientsPerUser across instances: refused when the user is at its cap anywhere; a place given back or a dead instance\'s share frees it', async () => {
    await using redis = await RedisServer.start();
    using dir = tempDir();
    const [a, b, c] = await startInstances(dir, redis.url, 3, { maxClientsPerUser: 2 });
    const onA = await Client.connect(a!.port('hub'), 'capped');
    await Client.connect(b!.port('hub'), 'capped');
    expect(await Client.status(c!.port('hub'), 'capped')).toBe(429);
    expect(await Client.status(a!.port('hub'), 'capped')).toBe(429);
    // Another user is not affected.
    expect(await Client.status(c!.port('hub'), 'free')).toBe(101);

    await onA.close();
    await until(async () => (await Client.status(c!.port('hub'), 'capped')) === 101, 5_000, 'a place given back');
    // That client closed at once: gw-b holds one place, one more fits, then none.
    const onC = await Client.connect(c!.port('hub'), 'capped');
    expect(await Client.status(a!.port('hub'), 'capped')).toBe(429);

    // kill -9 of gw-b: its share expires with it (deadAfter), and the user may connect again.
    b!.child.kill('SIGKILL');
    await b!.exited;
    b!.skipIdleCheck = 'killed';
    await until(async () => (await Client.status(a!.port('hub'), 'capped')) === 101, 5_000, 'the dead instance\'s share expired');
    await onC.close();
    for (const d of [a, c]) expect(await d!.stop()).toBe(0);
  }, 30_000);
});
