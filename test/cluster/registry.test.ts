import { describe, expect, test } from 'vitest';
import { Daemon, tempDir, until } from '../helpers/daemon.ts';
import { httpGet, startHttpBackend } from '../helpers/backends.ts';
import { RedisServer } from '../helpers/redis.ts';

interface Service {
  id: string;
  name: string;
  address: string;
  expiresAt: string | null;
}
type Watched = { event: string; data: { id?: string } };

const config = (redis: string, id: string, prefix: string) => `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 1, shutdownTimeout: 2s }
cluster: { redis: "${redis}", instanceId: ${id}, keyPrefix: "${prefix}", heartbeat: 200ms, deadAfter: 1s }
upstreams: [ { name: app, discovery: { service: app } } ]
listeners:
  - name: web
    protocol: http
    listen: "127.0.0.1:0"
    routes: [ { name: all, match: { pathPrefix: / }, upstream: app } ]
`;

/** Reads `GET /v1/services/events` into `events` until the signal aborts. */
function watch(url: string, signal: AbortSignal): Watched[] {
  const events: Watched[] = [];
  void (async () => {
    const res = await fetch(url, { signal });
    const decoder = new TextDecoder();
    let buf = '';
    for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true });
      for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const event = /^event: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (event && data) events.push({ event, data: JSON.parse(data) });
      }
    }
  })().catch(() => {});
  return events;
}

const ids = async (d: Daemon): Promise<string> => (await d.json<{ services: Service[] }>('/v1/services')).services.map((s) => s.id).sort().join();
const count = (events: Watched[], event: string, id: string): number => events.filter((e) => e.event === event && e.data.id === id).length;
const post = (d: Daemon, body: unknown): Promise<Response> => d.admin('/v1/services', { method: 'POST', body: JSON.stringify(body) });

describe('cluster mode: the shared service registry', () => {
  test('register on A, seen and discovered on B and C; heartbeats on B keep it; deregister on C removes it everywhere; one expired per watcher; a Redis restart (empty) resyncs', async () => {
    await using backend = await startHttpBackend('x');
    await using redis = await RedisServer.start();
    using dir = tempDir();
    const prefix = `t${process.pid}-${Date.now()}:`;
    const [a, b, c] = await Promise.all(['gw-a', 'gw-b', 'gw-c'].map((id) => Daemon.start(dir.write(`${id}.yaml`, config(redis.url, id, prefix)))));
    await using _a = a!;
    await using _b = b!;
    await using _c = c!;
    const all = [a!, b!, c!];
    for (const d of all) await until(async () => (await d.json<{ redis: string }>('/cluster')).redis === 'up', 10_000, 'redis up');
    await Promise.all(all.map((d) => d.waitForLog((l) => l.msg === 'service registry: synced with Redis')));
    const stop = new AbortController();
    const watched = all.map((d) => watch(`${d.adminUrl}/v1/services/events`, stop.signal));
    await until(() => watched.every((w) => w.some((e) => e.event === 'snapshot')), 5_000, 'watches open');

    // Registered on A: listed on B and C, and C proxies to it.
    const created = await post(a!, { id: 'app-1', name: 'app', address: `127.0.0.1:${backend.port}`, ttl: '1500ms' });
    expect(created.status).toBe(201);
    expect(await ids(a!)).toBe('app-1');
    for (const d of [b!, c!]) await until(async () => (await ids(d)) === 'app-1', 5_000, 'app-1 listed everywhere');
    await until(async () => (await httpGet(c!.port('web'), '/')).body === 'x', 5_000, 'C proxies to the discovered backend');
    const first = await c!.json<Service>('/v1/services/app-1');

    // Heartbeats on B only: it outlives its first expiry, on every instance.
    const pastFirst = Date.parse(first.expiresAt!) + 1_000;
    await until(async () => {
      const hb = await b!.admin('/v1/services/app-1/heartbeat', { method: 'PUT' });
      expect(hb.status).toBe(200);
      for (const d of all) expect(await ids(d)).toBe('app-1');
      return Date.now() > pastFirst;
    }, 10_000, 'heartbeats past the first expiry');
    expect(Date.parse((await a!.json<Service>('/v1/services/app-1')).expiresAt!)).toBeGreaterThan(Date.parse(first.expiresAt!));

    // Deregistered on C: gone everywhere, one `deregistered` per watcher, C stops routing to it.
    expect((await c!.admin('/v1/services/app-1', { method: 'DELETE' })).status).toBe(204);
    for (const d of all) await until(async () => (await ids(d)) === '', 5_000, 'app-1 gone everywhere');
    await until(async () => (await httpGet(c!.port('web'), '/')).status === 503, 5_000, 'C has no backend left');
    await until(() => watched.every((w) => count(w, 'deregistered', 'app-1') === 1), 5_000, 'one deregistered per watcher');
    expect(watched.map((w) => count(w, 'registered', 'app-1'))).toEqual([1, 1, 1]);

    // An expiry: exactly one `expired` per watcher, also once every instance's own timer is past.
    expect((await post(b!, { id: 'app-2', name: 'app', address: '127.0.0.1:1', ttl: '1s' })).status).toBe(201);
    await until(() => watched.every((w) => count(w, 'expired', 'app-2') === 1), 5_000, 'app-2 expired on every watcher');
    const expiredAt = Date.now();
    // Local timers are held back by heartbeat + 1 s: wait past them (polling the lists meanwhile).
    await until(async () => {
      for (const d of all) expect(await ids(d)).toBe('');
      return Date.now() > expiredAt + 1_500;
    }, 10_000, 'past every local timer');
    expect(watched.map((w) => count(w, 'expired', 'app-2'))).toEqual([1, 1, 1]);
    expect(all.map((d) => d.logs.filter((l) => l.msg === 'service expired: no heartbeat within its ttl' && l.id === 'app-2').length)).toEqual([1, 1, 1]);

    // Redis stops: each instance works alone; A registers app-3, C registers app-4.
    expect((await post(a!, { id: 'app-0', name: 'app', address: '127.0.0.1:2' })).status).toBe(201);
    for (const d of all) await until(async () => (await ids(d)) === 'app-0', 5_000, 'app-0 everywhere');
    await redis.stop();
    for (const d of all) await until(async () => (await d.json<{ redis: string }>('/cluster')).redis === 'down', 10_000, 'redis down');
    expect((await post(a!, { id: 'app-3', name: 'app', address: '127.0.0.1:3' })).status).toBe(201);
    expect((await post(c!, { id: 'app-4', name: 'app', address: '127.0.0.1:4' })).status).toBe(201);
    expect(await ids(a!)).toBe('app-0,app-3');
    expect(await ids(b!)).toBe('app-0');

    // Back, empty: every instance pushes what it has, and all agree again.
    await redis.restart();
    for (const d of all) await until(async () => (await ids(d)) === 'app-0,app-3,app-4', 10_000, 'resynced after the restart');
    // And it is shared again: deregistered on B, gone on A and C.
    expect((await b!.admin('/v1/services/app-3', { method: 'DELETE' })).status).toBe(204);
    for (const d of all) await until(async () => (await ids(d)) === 'app-0,app-4', 5_000, 'app-3 gone everywhere');
    stop.abort();
  });
});
