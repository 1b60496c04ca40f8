/**
 * Cluster mode through Redis Sentinel (`cluster.redis: redis+sentinel://...`): a private master,
 * a replica of it and one sentinel watching them, all on free ports; two instances (child
 * processes) find the master through the sentinel, share a rate limit and carry a push across
 * instances (sharded pub/sub on the resolved master). Then `SENTINEL FAILOVER` promotes the
 * replica, and the instances follow it.
 */
import http from 'node:http';
import { describe, expect, test } from 'vitest';
import type { Redis } from 'ioredis';
import { Daemon, tempDir, until } from '../helpers/daemon.ts';
import { startHttpBackend } from '../helpers/backends.ts';
import { HubNode } from '../helpers/hub-node.ts';
import { RedisSentinel, RedisServer } from '../helpers/redis.ts';
import { SECRET } from '../hub/harness.ts';
import { Client, hubCluster, linked } from './hub-harness.ts';

const PER_SECOND = 2;
const BURST = 10;
const TRIES = 14;
const MASTER = 'gh-main';
const SHARED = 'cluster: rate limits shared through redis';

const config = (o: { redis: string; id: string; prefix: string; backend: number; node?: string }) => `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 1, shutdownTimeout: 2s }
cluster: { redis: "${o.redis}", instanceId: ${o.id}, keyPrefix: "${o.prefix}", heartbeat: 200ms, deadAfter: 1s }
upstreams: [ { name: app, backends: [ "127.0.0.1:${o.backend}" ] } ]
listeners:
  - name: api
    protocol: http
    listen: "127.0.0.1:0"
    routes: [ { name: keyed, upstream: app, rateLimit: { perSecond: ${PER_SECOND}, burst: ${BURST}, key: "header:x-user" } } ]
  - name: hub
    protocol: hub
    listen: 127.0.0.1:0
    auth: { jwt: { secret: ${SECRET} } }
    ${o.node ? `nodes: [ { id: n1, url: "${o.node}" } ]` : 'discovery: { service: none }'}
    presenceGrace: 300ms
`;

function get(port: number, user: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false, headers: { 'x-user': user }, signal: AbortSignal.timeout(5_000) }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
  });
}

/** {@link TRIES} requests as `user` on each instance in turn: the 200s, and whether they fit one shared bucket (burst + refill + 2 leases of 1 per instance). */
async function shared(gws: Daemon[], user: string): Promise<{ ok: number; within: boolean }> {
  const t0 = performance.now();
  let ok = 0;
  for (const d of gws) for (let i = 0; i < TRIES; i++) if ((await get(d.port('api'), user)) === 200) ok++;
  const refilled = Math.ceil((PER_SECOND * (performance.now() - t0)) / 1000);
  return { ok, within: ok <= BURST + refilled + 2 * gws.length };
}

/** The names of the clients connected to a Redis (CLIENT LIST). */
async function clientNames(c: Redis): Promise<string[]> {
  const list = (await c.client('LIST')) as string;
  return [...list.matchAll(/ name=(\S*)/g)].map((m) => m[1]!).filter(Boolean);
}

const gatehouseOn = async (c: Redis) => (await clientNames(c)).filter((n) => n.startsWith('gatehouse:')).sort().join();
const ALL = 'gatehouse:gw-a,gatehouse:gw-a:sub,gatehouse:gw-b,gatehouse:gw-b:sub';

describe('cluster mode through Redis Sentinel', () => {
  test('two instances find the master through a sentinel, share a rate limit and a push; after SENTINEL FAILOVER they follow the promoted replica', async () => {
    await using backend = await startHttpBackend('app');
    await using master = await RedisServer.start();
    await using replica = await RedisServer.start({ args: ['--replicaof', '127.0.0.1', String(master.port)] });
    const mc = master.client();
    const rc = replica.client();
    await using node = await HubNode.start();
    using dir = tempDir();
    try {
      await Promise.all([mc.connect(), rc.connect()]);
      // The replica is in sync before the sentinel looks (it learns replicas from the master's INFO).
      await until(async () => /master_link_status:up/.test(await rc.info('replication')), 10_000, 'replica in sync');
      await using sentinel = await RedisSentinel.start({ name: MASTER, masterPort: master.port });
      const sc = sentinel.client();
      await sc.connect();
      try {
        await until(async () => ((await sc.call('SENTINEL', 'REPLICAS', MASTER)) as unknown[]).length === 1, 10_000, 'the sentinel knows the replica');

        const prefix = `sen${process.pid}-${Date.now()}:`;
        const url = sentinel.url(MASTER);
        const [a, b] = await Promise.all([
          Daemon.start(dir.write('a.yaml', config({ redis: url, id: 'gw-a', prefix, backend: backend.port, node: node.url }))),
          Daemon.start(dir.write('b.yaml', config({ redis: url, id: 'gw-b', prefix, backend: backend.port }))),
        ]);
        await using _a = a;
        await using _b = b;
        await node.waitFor((f) => f.type === 'hello' && f.gateId === 'gw-a');
        for (const d of [a, b]) {
          await linked(d, 2);
          await d.waitForLog((l) => l.msg === SHARED);
          // Sharded pub/sub (SSUBSCRIBE) on the master the sentinel named.
          expect((await hubCluster(d))?.sharded).toBe(true);
        }
        // Every connection (commands and subscriber, of both) is on the master, none on the replica.
        await until(async () => (await gatehouseOn(mc)) === ALL, 10_000, 'all connections on the master');
        expect(await gatehouseOn(rc)).toBe('');

        // One rate limit for both; a push from the node on gw-a reaches a client on gw-b.
        const s1 = await shared([a, b], 's1');
        expect(s1.within).toBe(true);
        expect(await mc.exists(`${prefix}rl:r:api:keyed:s1`)).toBe(1);
        const onB = await Client.connect(b.port('hub'), 'u1');
        await node.waitFor((f) => f.type === 'presence' && f.userId === 'u1' && f.online === true);
        node.push({ userId: 'u1', data: 'via-sentinel' });
        await onB.got('via-sentinel');

        // Failover: the sentinel promotes the replica; the instances reconnect to it.
        await sc.call('SENTINEL', 'FAILOVER', MASTER);
        await until(async () => Number(((await sc.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', MASTER)) as string[])[1]) === replica.port, 10_000, 'replica promoted');
        await until(async () => (await gatehouseOn(rc)) === ALL, 10_000, 'all connections on the promoted replica');
        for (const d of [a, b]) {
          await until(async () => (await d.json<{ redis: string }>('/cluster')).redis === 'up', 10_000, 'up after the failover');
          await linked(d, 2);
        }
        await until(async () => {
          node.push({ userId: 'u1', data: 'after-failover' });
          // One push per admin round trip, not a flood.
          await a.json('/cluster');
          return onB.frames.some((f) => f.data === 'after-failover');
        }, 10_000, 'a push crosses instances through the new master');
        const s2 = await shared([a, b], 's2');
        expect(s2.within).toBe(true);
        expect(await rc.exists(`${prefix}rl:r:api:keyed:s2`)).toBe(1);

        await onB.close();
        for (const d of [a, b]) expect(await d.stop()).toBe(0);
      } finally {
        sc.disconnect();
      }
    } finally {
      mc.disconnect();
      rc.disconnect();
    }
  }, 60_000);
});
