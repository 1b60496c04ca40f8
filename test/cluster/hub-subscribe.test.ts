/**
 * The subscriptions of the hub and of the service registry to their channels when the subscriber
 * connection is slow to finish its handshake: a TCP proxy in front of Redis holds back Redis's
 * first answers on gw-b's subscriber connection, so that gw-b is up (its command connection is)
 * while that connection is still in its handshake. gw-b must still hear what gw-a publishes.
 */
import net from 'node:net';
import { once } from 'node:events';
import { Redis } from 'ioredis';
import { describe, expect, test } from 'vitest';
import { tempDir, until } from '../helpers/daemon.ts';
import { HubNode } from '../helpers/hub-node.ts';
import { RedisServer } from '../helpers/redis.ts';
import { Client, startInstances } from './hub-harness.ts';

const HOLD_MS = 500;

/** A proxy to `target` that holds Redis's answers on the first connection naming itself `name` for HOLD_MS. */
async function holdingProxy(target: number, name: string): Promise<{ url: string; held: () => boolean; [Symbol.asyncDispose](): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  let held = false;
  const server = net.createServer((client) => {
    const upstream = net.connect(target, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    let seen = '';
    let hold: Buffer[] | undefined;
    client.on('data', (d: Buffer) => {
      upstream.write(d);
      if (held || seen.length > 4096) return;
      seen += d.toString('latin1');
      if (!seen.includes(name)) return;
      held = true;
      hold = [];
      setTimeout(() => {
        for (const b of hold!) client.write(b);
        hold = undefined;
      }, HOLD_MS);
    });
    upstream.on('data', (d: Buffer) => (hold ? hold.push(d) : client.write(d)));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `redis://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    held: () => held,
    async [Symbol.asyncDispose]() {
      for (const s of sockets) s.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}

describe('cluster: subscribing', () => {
  test('a subscriber connection still in its handshake when the instance is up: the instance subscribes once it is ready and hears broadcasts and registrations', async () => {
    await using redis = await RedisServer.start();
    await using proxy = await holdingProxy(redis.port, 'gatehouse:gw-b:sub');
    await using node = await HubNode.start();
    using dir = tempDir();
    const [a, b] = await startInstances(dir, proxy.url, 2, { node: node.url });
    expect(proxy.held()).toBe(true);
    await node.waitFor((f) => f.type === 'hello' && f.gateId === 'gw-a');
    const onB = await Client.connect(b!.port('hub'), 'u1');
    // Pub/sub is at most once: broadcast until one arrives (never, if gw-b is not subscribed).
    let n = 0;
    let last = 0;
    await until(
      () => {
        if (performance.now() - last >= 100) {
          node.broadcast(`probe-${n++}`);
          last = performance.now();
        }
        return onB.frames.some((f) => f.type === 'message');
      },
      10_000,
      'a broadcast from gw-a at a client of gw-b',
    );
    // The registry's changes: registered on gw-a, listed on gw-b. Its resync at `up` ran before
    // this registration, so only a live subscription (or the version check) brings it.
    const created = await a!.admin('/v1/services', { method: 'POST', body: JSON.stringify({ id: 'late-1', name: 'late', address: '127.0.0.1:1', ttl: '60s' }) });
    expect(created.status).toBe(201);
    await until(async () => (await b!.json<{ services: { id: string }[] }>('/v1/services')).services.some((s) => s.id === 'late-1'), 5_000, 'late-1 listed on gw-b');
    expect(b!.logs.some((l) => l.msg === 'service registry: shared changes did not arrive; resyncing')).toBe(false);

    // A change whose message is lost (written to Redis without a PUBLISH, as a message dropped
    // while a subscriber reconnects): every instance sees its copy behind Redis's version, resyncs
    // and lists it.
    const direct = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      await direct.connect();
      const [versionKey] = await direct.keys('*services:version');
      const prefix = versionKey!.slice(0, -'services:version'.length);
      const value = (await direct.hget(`${prefix}services`, 'late-1'))!;
      await direct.multi().hset(`${prefix}services`, 'lost-1', value.replaceAll('"late-1"', '"lost-1"')).incr(versionKey!).exec();
    } finally {
      direct.disconnect();
    }
    for (const d of [a!, b!]) {
      await until(async () => (await d.json<{ services: { id: string }[] }>('/v1/services')).services.some((s) => s.id === 'lost-1'), 5_000, 'lost-1 listed');
      await d.waitForLog((l) => l.msg === 'service registry: shared changes did not arrive; resyncing');
    }
    for (const d of [a, b]) expect(await d!.stop()).toBe(0);
  }, 30_000);
});
