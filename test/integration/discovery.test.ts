import { describe, expect, test } from 'vitest';
import { Daemon, runCli, tempDir, until } from '../helpers/daemon.ts';
import { startHttpBackend } from '../helpers/backends.ts';
import { HubNode } from '../helpers/hub-node.ts';
import { refusedPort } from '../helpers/ports.ts';

/** GET through the gateway's HTTP listener: status and body. */
async function get(port: number): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(5_000) });
  return { status: res.status, body: await res.text() };
}

/** Reads a Server-Sent Events stream into `events` until `stop` aborts. */
function watch(url: string, signal: AbortSignal): { events: { event: string; data: { id?: string; services?: unknown[] } }[]; done: Promise<void> } {
  const events: { event: string; data: { id?: string; services?: unknown[] } }[] = [];
  const done = (async () => {
    const res = await fetch(url, { signal });
    const decoder = new TextDecoder();
    let buf = '';
    try {
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
    } catch (err) {
      if (!signal.aborted) throw err;
    }
  })();
  // A test that fails before it stops the watch must not also report the stream's end.
  done.catch(() => {});
  return { events, done };
}

describe('service registry and discovery (workers: 2)', () => {
  test('registered backends are probed, then used; unhealthy ones never; expired and deregistered ones leave; a reload keeps them; SSE and the CLI show it all', async () => {
    await using a = await startHttpBackend('a');
    await using b = await startHttpBackend('b', 500);
    using dir = tempDir();
    const yaml = (level = 'info') => `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2, shutdownTimeout: 2s }
log: { level: ${level} }
upstreams:
  - name: app
    discovery: { service: app }
    healthCheck: { type: http, interval: 100ms, timeout: 90ms, healthyThreshold: 2 }
listeners:
  - name: web
    protocol: http
    listen: "127.0.0.1:0"
    routes: [ { name: all, match: { pathPrefix: / }, upstream: app } ]
`;
    const file = dir.write('gh.yaml', yaml());
    await using gh = await Daemon.start(file);
    const port = gh.port('web');
    const stop = new AbortController();
    const sse = watch(`${gh.adminUrl}/v1/services/events`, stop.signal);
    const post = (body: unknown) => gh.admin('/v1/services', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const backends = async () => (await gh.json<{ upstreams: { backends: { address: string; healthy: boolean }[] }[] }>('/upstreams')).upstreams[0]!.backends;

    // Nothing registered: no backend.
    expect((await get(port)).status).toBe(503);
    await until(() => sse.events.some((e) => e.event === 'snapshot'), 5_000, 'the snapshot');
    expect(sse.events[0]).toEqual({ event: 'snapshot', data: { services: [] } });

    // a registers: it is probed, then it serves.
    const ra = await post({ id: 'a', name: 'app', address: a.address, tags: ['v1'] });
    expect(ra.status).toBe(201);
    expect(await ra.json()).toMatchObject({ id: 'a' });
    await until(async () => (await get(port)).body === 'a', 5_000, 'traffic reaches a');
    expect(a.probes.length).toBeGreaterThan(0);

    // b registers but fails its health check: it is probed and never gets a request.
    expect((await post({ id: 'b', name: 'app', address: b.address })).status).toBe(201);
    await until(() => b.probes.length >= 3, 5_000, 'b probed');
    for (let i = 0; i < 20; i++) expect(await get(port)).toEqual({ status: 200, body: 'a' });
    expect(b.served).toBe(0);
    expect((await backends()).find((x) => x.address === b.address)?.healthy).toBe(false);
    // Once it passes, it takes its share.
    b.health = 200;
    await until(async () => (await get(port)).body === 'b', 5_000, 'traffic reaches b once healthy');

    // c registers with a 1 s ttl and never heartbeats: it expires and leaves the upstream.
    const dead = await refusedPort();
    expect((await post({ id: 'c', name: 'app', address: `127.0.0.1:${dead}`, ttl: '1s' })).status).toBe(201);
    await until(async () => (await backends()).some((x) => x.address === `127.0.0.1:${dead}`), 5_000, 'c listed');
    await until(() => sse.events.some((e) => e.event === 'expired' && e.data.id === 'c'), 5_000, 'c expired');
    await until(async () => !(await backends()).some((x) => x.address === `127.0.0.1:${dead}`), 5_000, 'c gone from the upstream');
    expect((await gh.admin('/v1/services/c')).status).toBe(404);

    // Heartbeats and reads.
    expect((await gh.admin('/v1/services/a/heartbeat', { method: 'PUT' })).status).toBe(200);
    expect((await gh.admin('/v1/services/zz/heartbeat', { method: 'PUT' })).status).toBe(404);
    expect(await gh.json('/v1/services/a')).toMatchObject({ id: 'a', name: 'app', address: a.address, tags: ['v1'], ttl: 0, expiresAt: null });
    const list = await gh.json<{ services: { id: string }[] }>('/v1/services?name=app');
    expect(list.services.map((s) => s.id).sort()).toEqual(['a', 'b']);

    // A reload that changes something else keeps the discovered backends.
    dir.write('gh.yaml', yaml('debug'));
    expect((await gh.admin('/reload', { method: 'POST' })).status).toBe(200);
    expect((await backends()).map((x) => x.address).sort()).toEqual([a.address, b.address].sort());

    // The CLI lists them.
    const cli = await runCli(['services', '--admin', gh.adminUrl]);
    expect(cli.code).toBe(0);
    expect(cli.stdout).toMatch(new RegExp(`^app\\s+a\\s+${a.address.replace(/\./g, '\\.')}\\s+v1\\s+-\\s+-$`, 'm'));

    // b deregisters: gone from the upstream, no more traffic.
    expect((await gh.admin('/v1/services/b', { method: 'DELETE' })).status).toBe(204);
    expect((await gh.admin('/v1/services/b', { method: 'DELETE' })).status).toBe(404);
    await until(async () => !(await backends()).some((x) => x.address === b.address), 5_000, 'b gone');
    const served = b.served;
    for (let i = 0; i < 10; i++) expect(await get(port)).toEqual({ status: 200, body: 'a' });
    expect(b.served).toBe(served);

    // Bad registrations are refused with every problem named; nothing changes.
    const bad = await post({ name: 'app', address: 'nope', ttl: 'soon' });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { problems: { field: string }[] }).problems.map((p) => p.field).sort()).toEqual(['address', 'ttl']);
    expect((await gh.admin('/v1/services', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{' })).status).toBe(400);
    // Any content type (curl -d sends a form type): the body must be JSON.
    const form = await gh.admin('/v1/services', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: JSON.stringify({ id: 'f', name: 'forms', address: '127.0.0.1:1' }) });
    expect(form.status).toBe(201);
    expect((await gh.admin('/v1/services/f', { method: 'DELETE' })).status).toBe(204);

    await until(() => sse.events.some((e) => e.event === 'deregistered' && e.data.id === 'f'), 5_000, 'f deregistered event');
    expect(sse.events.map((e) => `${e.event}${e.data.id ? `:${e.data.id}` : ''}`)).toEqual(['snapshot', 'registered:a', 'registered:b', 'registered:c', 'expired:c', 'deregistered:b', 'registered:f', 'deregistered:f']);
    stop.abort();
    await sse.done;
    // The service actors are in the tree, one per instance.
    const tree = JSON.stringify(await gh.json('/actors?type=service'));
    expect(tree).toContain('"service:a"');
    expect(tree).not.toContain('"service:b"');
    expect(await gh.idleLeftovers()).toEqual([]);
  });

  test('a hub listener with discovery dials the nodes that register and lets go of those that leave', async () => {
    await using node = await HubNode.start({ path: '/gate' });
    using dir = tempDir();
    const file = dir.write(
      'gh.yaml',
      `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 1, shutdownTimeout: 2s }
listeners:
  - name: hub
    protocol: hub
    listen: "127.0.0.1:0"
    auth: { jwt: { secret: discovery-test-secret-0123456789abcdef } }
    discovery: { service: nodes, path: /gate }
`,
    );
    await using gh = await Daemon.start(file);
    const hub = async () => (await gh.json<{ listeners: { nodes: { id: string; ready: boolean }[] }[] }>('/hub')).listeners[0]!.nodes;
    expect(await hub()).toEqual([]);
    const r = await gh.admin('/v1/services', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ id: 'n1', name: 'nodes', address: `127.0.0.1:${node.port}` }) });
    expect(r.status).toBe(201);
    await node.waitFor((f) => f.type === 'hello');
    await until(async () => (await hub()).some((n) => n.id === 'n1' && n.ready), 5_000, 'n1 ready');
    expect((await gh.admin('/v1/services/n1', { method: 'DELETE' })).status).toBe(204);
    await until(async () => (await hub()).length === 0 && node.sockets.size === 0, 5_000, 'n1 let go');
  });

  test('a backend added by a reload takes no traffic before its first probe passes', async () => {
    await using a = await startHttpBackend('a');
    await using b = await startHttpBackend('b', 500);
    using dir = tempDir();
    const yaml = (backends: string) => `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2, shutdownTimeout: 2s }
upstreams:
  - name: app
    backends: [ ${backends} ]
    healthCheck: { type: http, interval: 100ms, timeout: 90ms, unhealthyThreshold: 3 }
listeners:
  - name: web
    protocol: http
    listen: "127.0.0.1:0"
    routes: [ { name: all, match: { pathPrefix: / }, upstream: app } ]
`;
    const file = dir.write('gh.yaml', yaml(`"${a.address}"`));
    await using gh = await Daemon.start(file);
    const port = gh.port('web');
    expect(await get(port)).toEqual({ status: 200, body: 'a' });
    dir.write('gh.yaml', yaml(`"${a.address}", "${b.address}"`));
    expect((await gh.admin('/reload', { method: 'POST' })).status).toBe(200);
    // Warm, then swap: the reload answered after b's first probe, so b shows its verdict.
    expect(b.probes.length).toBeGreaterThanOrEqual(1);
    // Before the fix, b was healthy from the moment it was added until three probes had failed.
    for (let i = 0; i < 20; i++) expect(await get(port)).toEqual({ status: 200, body: 'a' });
    await until(() => b.probes.length >= 3, 5_000, 'b probed');
    expect(b.served).toBe(0);
    b.health = 200;
    await until(async () => (await get(port)).body === 'b', 5_000, 'b serves once healthy');
  });
});
