/**
 * A Redis that is reachable but full (`maxmemory` reached with `noeviction`: every write gets
 * `OOM command not allowed`), with two instances (child processes) sharing it: what a user sees
 * while it lasts (rate limits on local budgets, pushes to local clients, the registry and presence
 * on the instance alone, one log line, `/cluster` and the metrics saying `full`) and after memory is
 * freed (everything shared again, what changed meanwhile written back).
 */
import http from 'node:http';
import { describe, expect, test } from 'vitest';
import { Daemon, metric, tempDir, until } from '../helpers/daemon.ts';
import { startHttpBackend } from '../helpers/backends.ts';
import { HubNode } from '../helpers/hub-node.ts';
import { RedisServer } from '../helpers/redis.ts';
import { SECRET } from '../hub/harness.ts';
import { Client, linked } from './hub-harness.ts';

const PER_SECOND = 2;
const BURST = 10;
/** Requests per instance in a burst: more than the burst and what refills meanwhile. */
const TRIES = 14;
const FULL = 'cluster: redis full (writes refused), serving with local state';
const UP = 'cluster: redis up';
const DOWN = 'cluster: redis down, serving with local state';
const SHARED = 'cluster: rate limits shared through redis';
const LOCAL = 'cluster: rate limits on local buckets until redis is back (each instance applies the whole limit)';

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

/** One GET on a fresh connection: its status. */
function get(port: number, user: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false, headers: { 'x-user': user }, signal: AbortSignal.timeout(5_000) }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
  });
}

/**
 * {@link TRIES} requests as `user` on gw-a, then as many on gw-b: how many each admitted, and
 * whether the two together stayed within one shared bucket: its burst, what refilled meanwhile,
 * and 2 leases (1 token each at this rate) per instance (docs/cluster.md, "The bound"). Two
 * local budgets admit a burst each, which is more.
 */
async function both(a: Daemon, b: Daemon, user: string): Promise<{ a: number; b: number; shared: boolean }> {
  const t0 = performance.now();
  const ra = await burst(a, user, TRIES);
  const rb = await burst(b, user, TRIES);
  const refilled = Math.ceil((PER_SECOND * (performance.now() - t0)) / 1000);
  return { a: ra.ok, b: rb.ok, shared: ra.ok + rb.ok <= BURST + refilled + 2 * 2 };
}

/** `n` requests in a row as `user`: how many passed (200) and how many were refused (429). */
async function burst(d: Daemon, user: string, n: number): Promise<{ ok: number; refused: number }> {
  let ok = 0;
  let refused = 0;
  for (let i = 0; i < n; i++) {
    const code = await get(d.port('api'), user);
    expect([200, 429]).toContain(code);
    if (code === 200) ok++;
    else refused++;
  }
  return { ok, refused };
}

/** The cluster actor's state lines since log line `from`. */
const states = (d: Daemon, from = 0) => d.logs.slice(from).map((l) => l.msg).filter((m) => m === FULL || m === UP || m === DOWN);
/**
 * One line per change: never the same line twice in a row, and `full` once per spell (a heartbeat
 * slower than 1 s on a loaded machine makes a `down` in between, and `full` again after it).
 */
function oncePerChange(seq: string[]): void {
  expect(seq.filter((m, i) => i > 0 && m === seq[i - 1])).toEqual([]);
  expect(seq.filter((m) => m === FULL).length).toBe(1 + seq.filter((m) => m === DOWN).length);
}
const redisState = async (d: Daemon) => (await d.json<{ redis: string }>('/cluster')).redis;
const metrics = async (d: Daemon) => (await d.admin('/metrics')).text();
const services = async (d: Daemon) => (await d.json<{ services: { id: string }[] }>('/v1/services')).services.map((s) => s.id).sort().join();

describe('cluster mode: a full Redis (maxmemory, noeviction)', () => {
  test('writes refused: each instance serves on local state and says so once; memory freed: shared again, and what changed meanwhile is seen everywhere', async () => {
    await using backend = await startHttpBackend('app');
    await using redis = await RedisServer.start();
    await using node = await HubNode.start();
    using dir = tempDir();
    const prefix = `full${process.pid}-${Date.now()}:`;
    const [a, b] = await Promise.all([
      Daemon.start(dir.write('a.yaml', config({ redis: redis.url, id: 'gw-a', prefix, backend: backend.port, node: node.url }))),
      Daemon.start(dir.write('b.yaml', config({ redis: redis.url, id: 'gw-b', prefix, backend: backend.port }))),
    ]);
    await using _a = a;
    await using _b = b;
    await node.waitFor((f) => f.type === 'hello' && f.gateId === 'gw-a');
    for (const d of [a, b]) {
      await linked(d, 2);
      await d.waitForLog((l) => l.msg === SHARED);
    }
    const admin = redis.client();
    await admin.connect();
    try {
      // Shared first: one bucket for both instances.
      expect((await both(a, b, 'before')).shared).toBe(true);
      const onA = await Client.connect(a.port('hub'), 'u1');

      const spellStart = [a, b].map((d) => d.logs.length);
      // Fill Redis: junk keys, then maxmemory 1 MB under what it uses: every write is refused.
      await admin.config('SET', 'maxmemory-policy', 'noeviction');
      const junk = Array.from({ length: 48 }, (_, i) => `junk:${i}`);
      for (const k of junk) await admin.set(k, 'x'.repeat(64 * 1024));
      const used = Number(/used_memory:(\d+)/.exec(await admin.info('memory'))![1]);
      await admin.config('SET', 'maxmemory', String(used - 1024 * 1024));
      await expect(admin.set('probe', '1')).rejects.toThrow(/^OOM command not allowed/);

      // Both see it: reachable (gatehouse_cluster_up 1) but full; leases off.
      for (const d of [a, b]) {
        await until(async () => (await redisState(d)) === 'full', 10_000, `${d === a ? 'gw-a' : 'gw-b'} full`);
        await d.waitForLog((l) => l.msg === LOCAL);
        const text = await metrics(d);
        expect(metric(text, 'gatehouse_cluster_up')).toBe(1);
        expect(metric(text, 'gatehouse_cluster_redis_full')).toBe(1);
        expect(metric(text, 'gatehouse_cluster_leases_shared')).toBe(0);
      }

      // A rate limit still holds, on each instance's own budget (a whole burst each).
      const during = await both(a, b, 'during');
      expect(during.a).toBeGreaterThanOrEqual(BURST);
      expect(during.a).toBeLessThan(TRIES);
      expect(during.b).toBeGreaterThanOrEqual(BURST);
      expect(during.b).toBeLessThan(TRIES);
      expect(during.shared).toBe(false);
      // Pushes and broadcasts reach the local client.
      node.push({ userId: 'u1', data: 'while-full' });
      await onA.got('while-full');
      node.broadcast('all-while-full', 'bf');
      await onA.got('all-while-full');
      // The registry answers, for this instance alone.
      const res = await a.admin('/v1/services', { method: 'POST', body: JSON.stringify({ id: 'svc-full', name: 'svc', address: '127.0.0.1:1', ttl: '60s' }) });
      expect(res.status).toBeLessThan(300);
      expect(await services(a)).toContain('svc-full');
      expect(await services(b)).not.toContain('svc-full');
      // Presence works locally: a user connecting to gw-b now cannot be announced yet.
      const lateB = await Client.connect(b.port('hub'), 'late');
      node.push({ userId: 'late', data: 'not-yet' });

      // One line per instance for the whole spell (several heartbeats and failed writes long).
      for (const [i, d] of [a, b].entries()) {
        const seq = states(d, spellStart[i]);
        expect(seq[0]).toBe(FULL);
        oncePerChange(seq);
      }

      // Memory freed (the junk deleted): shared again, and what changed meanwhile is written back.
      await admin.del(...junk);
      await admin.set('probe', '1');
      for (const d of [a, b]) await until(async () => (await redisState(d)) === 'up', 10_000, 'up again');
      await until(async () => (await services(b)).includes('svc-full'), 10_000, 'the service registered during the spell seen on gw-b');
      await node.waitFor((f) => f.type === 'presence' && f.userId === 'late' && f.online === true, 10_000);
      await until(() => [a, b].every((d, i) => d.logs.slice(spellStart[i]).some((l) => l.msg === SHARED)), 10_000, 'leases on again');
      await until(async () => {
        node.push({ userId: 'late', data: 'after' });
        // One push per admin round trip, not a flood.
        await a.json('/cluster');
        return lateB.frames.some((f) => f.data === 'after');
      }, 10_000, 'a push from the node on gw-a reaches the client on gw-b again');
      expect(lateB.frames.some((f) => f.data === 'not-yet')).toBe(false);
      // Shared limits again.
      expect((await both(a, b, 'after')).shared).toBe(true);
      // A user whose shared bucket is empty in Redis (its TAT a minute ahead, as another instance
      // would leave it): gw-a admits the first request on credit, and Redis denies the lease.
      const [sec = 0, usec = 0] = (await admin.time()).map(Number);
      await admin.set(`${prefix}rl:r:api:keyed:drained`, String(sec * 1e6 + usec + 60e6), 'PX', 60_000);
      const drained = await burst(a, 'drained', 3);
      expect(drained.ok).toBeLessThanOrEqual(1);
      for (const d of [a, b]) {
        const seq = states(d, spellStart[[a, b].indexOf(d)]);
        expect(seq.at(-1)).toBe(UP);
        oncePerChange(seq.slice(0, -1));
        const text = await metrics(d);
        expect(metric(text, 'gatehouse_cluster_redis_full')).toBe(0);
        expect(metric(text, 'gatehouse_cluster_leases_shared')).toBe(1);
        // The lease path counted its round trips and their time.
        expect(metric(text, 'gatehouse_cluster_lease_roundtrips_total')).toBeGreaterThan(0);
        expect(metric(text, 'gatehouse_cluster_lease_roundtrip_seconds_total')).toBeGreaterThan(0);
      }
      // Leases granted, with their tokens; and the drained bucket's ask denied.
      const textA = await metrics(a);
      expect(metric(textA, 'gatehouse_cluster_lease_requests_total', { result: 'granted' })).toBeGreaterThan(0);
      expect(metric(textA, 'gatehouse_cluster_lease_tokens_total')).toBeGreaterThan(0);
      await until(async () => (metric(await metrics(a), 'gatehouse_cluster_lease_requests_total', { result: 'denied' }) ?? 0) > 0, 10_000, 'a denied lease counted');

      for (const cl of [onA, lateB]) await cl.close();
    } finally {
      admin.disconnect();
    }
    for (const d of [a, b]) expect(await d.stop()).toBe(0);
  }, 45_000);
});
