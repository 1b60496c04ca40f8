import http from 'node:http';
import { describe, expect, test } from 'vitest';
import { Daemon, tempDir, until } from '../helpers/daemon.ts';
import { startHttpBackend } from '../helpers/backends.ts';
import { RedisServer } from '../helpers/redis.ts';
import { leaseSize } from '../../src/cluster/ratelimit-shard.ts';

const PER_SECOND = 20;
const BURST = 20;
const INSTANCES = 3;
/** Rounds of one request per instance: 90 requests against a shared burst of 20. */
const ROUNDS = 30;
/** Tokens per lease at 20 per second (5%, at least 1). */
const LEASE = leaseSize(BigInt(1e9 / PER_SECOND), BURST);

const config = (redis: string, id: string, backend: number, prefix: string) => `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 1, shutdownTimeout: 2s }
cluster: { redis: "${redis}", instanceId: ${id}, keyPrefix: "${prefix}", heartbeat: 200ms, deadAfter: 1s }
upstreams: [ { name: app, backends: [ "127.0.0.1:${backend}" ] } ]
listeners:
  - name: conns
    protocol: http
    listen: "127.0.0.1:0"
    rateLimit: { perSecond: ${PER_SECOND}, burst: ${BURST} }
    routes: [ { name: all, upstream: app } ]
  - name: api
    protocol: http
    listen: "127.0.0.1:0"
    routes: [ { name: keyed, upstream: app, rateLimit: { perSecond: ${PER_SECOND}, burst: ${BURST}, key: "header:x-user" } } ]
`;

/** One GET on a fresh connection: its status (429 when a rate limit refused it). */
function get(port: number, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false, headers, signal: AbortSignal.timeout(5_000) }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
  });
}

/**
 * {@link ROUNDS} rounds of one request to each instance at once: the 200s per instance, and how
 * long it took (the bucket refills meanwhile, so the bound below counts it).
 */
async function burst(gws: Daemon[], listener: string, headers: Record<string, string> = {}): Promise<{ ok: number[]; total: number; seconds: number }> {
  const ok = gws.map(() => 0);
  const t0 = performance.now();
  for (let r = 0; r < ROUNDS; r++) {
    const codes = await Promise.all(gws.map((g) => get(g.port(listener), headers)));
    codes.forEach((c, i) => {
      expect([200, 429]).toContain(c);
      if (c === 200) ok[i]!++;
    });
  }
  const seconds = (performance.now() - t0) / 1000;
  return { ok, total: ok.reduce((a, b) => a + b, 0), seconds };
}

/** The documented bound: burst plus the refill meanwhile, plus at most 2 leases per instance (one held, one lent as credit). */
const sharedBound = (seconds: number) => BURST + Math.ceil(PER_SECOND * seconds) + 2 * LEASE * INSTANCES;

const switched = (d: Daemon, msg: string) => d.logs.filter((l) => l.msg === msg).length;
const SHARED = 'cluster: rate limits shared through redis';
const LOCAL = 'cluster: rate limits on local buckets until redis is back (each instance applies the whole limit)';

describe('cluster mode: rate limits shared through Redis leases', () => {
  test('3 instances share a listener and a per-key route limit; Redis stopped or paused: each its own local budget; back: shared again', async () => {
    await using backend = await startHttpBackend('app');
    await using redis = await RedisServer.start();
    using dir = tempDir();
    const prefix = `rl${process.pid}-${Date.now()}:`;
    await using a = await Daemon.start(dir.write('a.yaml', config(redis.url, 'gw-a', backend.port, prefix)));
    await using b = await Daemon.start(dir.write('b.yaml', config(redis.url, 'gw-b', backend.port, prefix)));
    await using c = await Daemon.start(dir.write('c.yaml', config(redis.url, 'gw-c', backend.port, prefix)));
    const gws = [a, b, c];
    await Promise.all(gws.map((d) => d.waitForLog((l) => l.msg === SHARED)));

    // Shared: about one burst across the three, not three bursts.
    const conns = await burst(gws, 'conns');
    expect(conns.total).toBeLessThanOrEqual(sharedBound(conns.seconds));
    expect(conns.total).toBeGreaterThanOrEqual(BURST - 2 * LEASE * INSTANCES);
    // Every instance got some of it.
    for (const n of conns.ok) expect(n).toBeGreaterThan(0);
    const alice = await burst(gws, 'api', { 'x-user': 'alice' });
    expect(alice.total).toBeLessThanOrEqual(sharedBound(alice.seconds));
    expect(alice.total).toBeGreaterThanOrEqual(BURST - 2 * LEASE * INSTANCES);
    // Per key: another user has a bucket of their own.
    expect(await get(a.port('api'), { 'x-user': 'zed' })).toBe(200);

    // Redis stopped: each instance falls back to its own local bucket (a full burst each) and serves.
    await redis.stop();
    for (const d of gws) await d.waitForLog((l) => l.msg === LOCAL);
    const local = await burst(gws, 'conns');
    for (const n of local.ok) expect(n).toBeGreaterThanOrEqual(BURST);
    expect(local.total).toBeGreaterThan(sharedBound(conns.seconds));
    const bob = await burst(gws, 'api', { 'x-user': 'bob' });
    for (const n of bob.ok) expect(n).toBeGreaterThanOrEqual(BURST);
    for (const d of gws) expect(switched(d, LOCAL)).toBe(1);

    // Restarted: shared again (a fresh Redis: a full shared bucket).
    await redis.restart();
    await until(() => gws.every((d) => switched(d, SHARED) === 2), 15_000, 'leases on again in every instance');
    const again = await burst(gws, 'conns');
    expect(again.total).toBeLessThanOrEqual(sharedBound(again.seconds));
    expect(again.total).toBeGreaterThanOrEqual(BURST - 2 * LEASE * INSTANCES);
    const carol = await burst(gws, 'api', { 'x-user': 'carol' });
    expect(carol.total).toBeLessThanOrEqual(sharedBound(carol.seconds));

    // A Redis that answers nothing (paused) is a Redis away: local buckets, then shared again.
    redis.pause(true);
    await until(() => gws.every((d) => switched(d, LOCAL) === 2), 15_000, 'local buckets while Redis is paused');
    const dave = await burst(gws, 'api', { 'x-user': 'dave' });
    for (const n of dave.ok) expect(n).toBeGreaterThanOrEqual(BURST);
    redis.pause(false);
    await until(() => gws.every((d) => switched(d, SHARED) === 3), 15_000, 'leases on again after the pause');
    const erin = await burst(gws, 'api', { 'x-user': 'erin' });
    expect(erin.total).toBeLessThanOrEqual(sharedBound(erin.seconds));
  });
});
