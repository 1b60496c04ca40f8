import { writeFileSync } from 'node:fs';
import { describe, expect, onTestFinished, test } from 'vitest';
import { Daemon, metric, tempDir, until } from '../helpers/daemon.ts';
import { connect } from '../helpers/net.ts';
import { httpGet, startBackends, startHttpBackend, type KillableEcho } from '../helpers/backends.ts';
import { Load, echoRoundTrip } from '../helpers/load.ts';
import {
  backendView,
  breakerStory,
  drained,
  findNodes,
  logTime,
  metricsText as metrics,
  stopAndReadLogs,
  upstreamsConfig as config,
  type ActorNode,
  type UpstreamsBody,
} from '../helpers/upstreams.ts';

/**
 * Issue 3, upstream resilience, end to end: the daemon runs from its CLI as a child process with
 * two worker-thread shards, in front of real backends on 127.0.0.1, driven by real clients.
 * Failed backend connects are seen in the shards' debug log lines ('backend connect failed'),
 * breaker transitions in the control plane's info lines.
 */

/** Breaker on, health probes out of the way (probed once at start, then not for an hour): only the breaker reacts. */
const breakerOnly = `
healthCheck: { type: tcp, interval: 1h }
circuitBreaker: { failureThreshold: 3, successThreshold: 1, openFor: 1s }`;

const payload = (tag: string): Buffer => Buffer.from(`${tag}-`.padEnd(64, 'x'));

function breakerMetric(text: string, backend: string, upstream = 'app'): number | undefined {
  return metric(text, 'gatehouse_breaker_state', { upstream, backend });
}

/**
 * Failures a correct gateway cannot hide are round trips whose bytes were on the killed
 * backend's connection when it was destroyed: they were in flight during the kill. This returns
 * the failures that were not (expected: none).
 */
function failuresNotExplainedByKill(load: Load, killStart: number, killEnd: number) {
  return load.failures.filter((f) => !(f.startedAt <= killEnd && f.endedAt >= killStart));
}

describe('circuit breaker: a backend killed under load', () => {
  test('its breaker opens, traffic moves to the others with no client failure; a trial while it is still dead fails and reopens it', async () => {
    await using backends = await startBackends(3);
    const [a, b, c] = [...backends] as [KillableEcho, KillableEcho, KillableEcho];
    using dir = tempDir();
    // Debug level: the shards log every failed backend connect ('backend connect failed'), which
    // is how this test sees connection attempts to a backend that is down.
    await using gh = await Daemon.start(dir.write('gh.yaml', config([{ name: 'app', backends: backends.map((x) => x.address), extra: breakerOnly }], [['tcp-in', 'app']], 'debug')));
    const port = gh.port('tcp-in');
    const load = new Load({ port, parallel: 4, max: 40_000, deadlineMs: 25_000 });
    onTestFinished(() => load.stop());

    await load.waitFor(() => backends.every((x) => x.served >= 20), 10_000, 'every backend serving');
    const killStart = performance.now();
    await c.kill();
    const killEnd = performance.now();
    const servedAtKill = a.served + b.served;

    // Three failed connects in a row (counted across both shards) open it.
    const opened = await gh.waitForLog((l) => l.msg === 'circuit breaker opened' && l.backend === c.address);
    expect(opened.failures).toBeGreaterThanOrEqual(3);
    await expect.poll(async () => (await backendView(gh, 'app', c.address))?.breaker).toBe('open');
    const m = await metrics(gh);
    expect(breakerMetric(m, c.address)).toBe(1);
    expect(breakerMetric(m, a.address)).toBe(0);
    expect(breakerMetric(m, b.address)).toBe(0);
    // Only the breaker reacted: the probes have not run again.
    expect(metric(m, 'gatehouse_backend_healthy', { upstream: 'app', backend: c.address })).toBe(1);

    // Still dead when openFor has passed: the half-open trial fails and it opens again, twice.
    let reopened = 0;
    await gh.waitForLog((l) => l.msg === 'circuit breaker trial failed: open again' && l.backend === c.address && ++reopened === 2, 10_000);
    await load.progress(300);
    await expect.poll(async () => (await backendView(gh, 'app', c.address))?.breaker).toBe('open');
    await load.stop();

    // Clients: every round trip got its echo, but those whose connection was on the killed
    // backend at that moment (inherent: bytes already sent to a backend cannot be replayed).
    expect(failuresNotExplainedByKill(load, killStart, killEnd)).toEqual([]);
    // At most one per client worker (each has one connection in flight), and typically the
    // sockets the backend had open, or fewer (some had already sent their echo).
    expect(load.failures.length).toBeLessThanOrEqual(4);
    for (const f of load.failures) expect(String(f.error)).toMatch(/ECONNRESET|closed after/);
    expect(a.served + b.served - servedAtKill).toBeGreaterThanOrEqual(300);

    // Every client connection ended `ok`: no connect failure reached a client as backend_error or no_backend.
    const end = await drained(gh, load.started);
    expect(metric(end, 'gatehouse_connections_total', { listener: 'tcp-in', outcome: 'ok' })).toBe(load.started);
    const view = await gh.json<UpstreamsBody>('/upstreams');
    expect(view.upstreams[0]!.backends.map((x) => [x.address, x.breaker, x.activeConnections])).toEqual([
      [a.address, 'closed', 0],
      [b.address, 'closed', 0],
      [c.address, 'open', 0],
    ]);

    const logs = await stopAndReadLogs(gh);
    // opened, then (half-open, trial failed) once or more, maybe a last half-open with no traffic to try it.
    expect(breakerStory(logs, c.address)).toMatch(/^OHF(HF)+H?$/);
    expect(breakerStory(logs, a.address) + breakerStory(logs, b.address)).toBe('');
    // After the first half-open, the only connects to the dead backend are the trials: one per
    // half-open, each answered by a "trial failed". Were an open breaker not honoured, a third of
    // the connections would try it.
    const firstHalfOpen = logs.findIndex((l) => l.backend === c.address && l.msg.startsWith('circuit breaker half-open'));
    const reopens = logs.filter((l) => l.backend === c.address && l.msg === 'circuit breaker trial failed: open again').length;
    const failedConnects = logs.flatMap((l, i) => (l.msg === 'backend connect failed' && l.backend === c.address ? [i] : []));
    expect(failedConnects.filter((i) => i < firstHalfOpen).length).toBeGreaterThanOrEqual(3);
    expect(failedConnects.filter((i) => i > firstHalfOpen).length).toBeLessThanOrEqual(reopens);
    expect(reopens).toBeGreaterThanOrEqual(2);
  });

  test('restarted on the same port: after openFor it half-opens, one trial connection goes through, it closes and serves again', async () => {
    await using backends = await startBackends(3);
    const [a, b, c] = [...backends] as [KillableEcho, KillableEcho, KillableEcho];
    using dir = tempDir();
    await using gh = await Daemon.start(dir.write('gh.yaml', config([{ name: 'app', backends: backends.map((x) => x.address), extra: breakerOnly }], [['tcp-in', 'app']])));
    const port = gh.port('tcp-in');
    const view = async () => (await backendView(gh, 'app', c.address))!;

    // 1. Under load: killed, opened, restarted at once (the breaker still open); after openFor it
    // half-opens, a trial goes through and it closes, then it takes its share again.
    const load = new Load({ port, parallel: 4, max: 40_000, deadlineMs: 25_000 });
    onTestFinished(() => load.stop());
    await load.waitFor(() => backends.every((x) => x.served >= 20), 10_000, 'every backend serving');
    const killStart = performance.now();
    await c.kill();
    const killEnd = performance.now();
    await gh.waitForLog((l) => l.msg === 'circuit breaker opened' && l.backend === c.address);
    await c.restart();
    const servedAtRestart = c.served;
    await gh.waitForLog((l) => l.msg === 'circuit breaker closed' && l.backend === c.address, 10_000);
    // Restarted well within openFor, the first trial succeeds ((HF)* only if this test was starved for a second).
    expect(breakerStory(gh.logs, c.address)).toMatch(/^O(HF)*HC$/);
    await load.waitFor(() => c.served >= servedAtRestart + 50, 10_000, 'the restarted backend serving');
    await load.stop();
    expect(failuresNotExplainedByKill(load, killStart, killEnd)).toEqual([]);
    expect(load.failures.length).toBeLessThanOrEqual(4);
    expect(await view()).toMatchObject({ breaker: 'closed', healthy: true });

    // 2. With no other traffic, one connection at a time, so that each step can be seen: killed
    // again, three failed connects open it (each client is served by another backend).
    await c.kill();
    let oneByOne = 0;
    while (oneByOne < 30 && (await view()).breaker !== 'open') expect(await echoRoundTrip(port, payload(`one-${oneByOne++}`))).toBeUndefined();
    expect((await view()).breaker).toBe('open');
    expect(breakerMetric(await metrics(gh), c.address)).toBe(1);
    // After openFor it half-opens and stays so, its one permit unused.
    await expect.poll(async () => (await view()).breaker, { timeout: 5_000 }).toBe('half_open');
    expect(breakerMetric(await metrics(gh), c.address)).toBe(2);
    await c.restart();
    expect(await view()).toMatchObject({ breaker: 'half_open', healthy: true });
    // Connections until one lands on it (round robin: within three per shard). That one is the
    // trial; it succeeds, and the breaker closes with nothing else sent meanwhile.
    const servedBefore = c.served;
    while (oneByOne < 60 && c.served === servedBefore) expect(await echoRoundTrip(port, payload(`one-${oneByOne++}`))).toBeUndefined();
    expect(c.served).toBe(servedBefore + 1);
    await expect.poll(async () => (await view()).breaker).toBe('closed');
    expect(breakerMetric(await metrics(gh), c.address)).toBe(0);
    expect(c.served).toBe(servedBefore + 1);

    // It serves its share again, under load, with no failure at all.
    const again = new Load({ port, parallel: 4, max: 20_000, deadlineMs: 15_000 });
    onTestFinished(() => again.stop());
    await again.waitFor(() => c.served >= servedBefore + 50, 10_000, 'the restarted backend serving');
    await again.stop();
    expect(again.failures).toEqual([]);
    expect(a.served > 0 && b.served > 0).toBe(true);
    const all = load.started + oneByOne + again.started;
    const end = await drained(gh, all);
    expect(metric(end, 'gatehouse_connections_total', { listener: 'tcp-in', outcome: 'ok' })).toBe(all);
    expect((await gh.json<UpstreamsBody>('/upstreams')).upstreams[0]!.backends.map((x) => [x.breaker, x.activeConnections])).toEqual([
      ['closed', 0],
      ['closed', 0],
      ['closed', 0],
    ]);
    const logs = await stopAndReadLogs(gh);
    expect(breakerStory(logs, c.address)).toMatch(/^O(HF)*HCOHC$/);
  });
});

/** Probes every 100 ms, two in a row flip the verdict; the breaker is off, so only the probes react. */
const probesOnly = (type: 'tcp' | 'http') => `
healthCheck: { type: ${type}, path: /healthz, interval: 100ms, timeout: 100ms, unhealthyThreshold: 2, healthyThreshold: 2 }
circuitBreaker: { enabled: false }`;

function healthyMetric(text: string, backend: string, upstream = 'app'): number | undefined {
  return metric(text, 'gatehouse_backend_healthy', { upstream, backend });
}

describe('health probes through the daemon', () => {
  test('tcp: a killed backend is marked unhealthy within a bounded time and gets no new connections; restarted, it is healthy again and serves', async () => {
    await using backends = await startBackends(3);
    const [a, b, c] = [...backends] as [KillableEcho, KillableEcho, KillableEcho];
    using dir = tempDir();
    // Debug level: every failed backend connect is logged, so a connect to the dead backend would show.
    await using gh = await Daemon.start(dir.write('gh.yaml', config([{ name: 'app', backends: backends.map((x) => x.address), extra: probesOnly('tcp') }], [['tcp-in', 'app']], 'debug')));
    const port = gh.port('tcp-in');
    for (let i = 0; i < 9; i++) expect(await echoRoundTrip(port, payload(`warm-${i}`))).toBeUndefined();
    expect(backends.map((x) => x.served > 0)).toEqual([true, true, true]);

    await b.kill();
    // Two failed probes 100 ms apart (each refused at once): ~200 ms; 2 s is the bound.
    await expect.poll(async () => (await backendView(gh, 'app', b.address))?.healthy, { timeout: 2_000, interval: 20 }).toBe(false);
    const m = await metrics(gh);
    expect([healthyMetric(m, a.address), healthyMetric(m, b.address), healthyMetric(m, c.address)]).toEqual([1, 0, 1]);
    const unhealthy = await gh.waitForLog((l) => l.msg === 'backend unhealthy' && l.backend === b.address);
    expect(unhealthy.fails).toBe(2);

    // No new connection goes to it: every round trip is served by the two others, and no connect
    // to it is even attempted (a round robin that ignored the verdict would try it every third time).
    const observedAt = Date.now();
    const servedBefore = a.served + c.served;
    for (let i = 0; i < 30; i++) expect(await echoRoundTrip(port, payload(`down-${i}`))).toBeUndefined();
    expect(a.served + c.served - servedBefore).toBe(30);
    expect((await backendView(gh, 'app', b.address))?.activeConnections).toBe(0);
    const restartedAt = Date.now();

    await b.restart();
    await expect.poll(async () => (await backendView(gh, 'app', b.address))?.healthy, { timeout: 3_000, interval: 20 }).toBe(true);
    expect(healthyMetric(await metrics(gh), b.address)).toBe(1);
    const healthy = await gh.waitForLog((l) => l.msg === 'backend healthy' && l.backend === b.address);
    expect(healthy.passes).toBe(2);
    const bServed = b.served;
    for (let i = 0; i < 12 && b.served === bServed; i++) expect(await echoRoundTrip(port, payload(`back-${i}`))).toBeUndefined();
    expect(b.served).toBe(bServed + 1);

    const logs = await stopAndReadLogs(gh);
    const triedWhileDown = logs.filter((l) => l.msg === 'backend connect failed' && l.backend === b.address && logTime(l) > observedAt && logTime(l) < restartedAt);
    expect(triedWhileDown).toEqual([]);
  });

  test('http: a backend answering 500 on /healthz is unhealthy and skipped; answering 200 again, it is healthy and serves', async () => {
    await using h1 = await startHttpBackend('h1', 200);
    await using h2 = await startHttpBackend('h2', 500);
    using dir = tempDir();
    await using gh = await Daemon.start(dir.write('gh.yaml', config([{ name: 'app', backends: [h1.address, h2.address], extra: probesOnly('http') }], [['tcp-in', 'app']])));
    const port = gh.port('tcp-in');

    // Backends start healthy and are probed at once: two 500s make h2 unhealthy.
    await expect.poll(async () => (await backendView(gh, 'app', h2.address))?.healthy, { timeout: 3_000, interval: 20 }).toBe(false);
    const m = await metrics(gh);
    expect([healthyMetric(m, h1.address), healthyMetric(m, h2.address)]).toEqual([1, 0]);
    const unhealthy = await gh.waitForLog((l) => l.msg === 'backend unhealthy' && l.backend === h2.address);
    expect(unhealthy).toMatchObject({ fails: 2, error: 'HTTP 500' });
    expect(h2.probes.length).toBeGreaterThanOrEqual(2);
    expect(new Set(h2.probes.map((p) => `${p.method} ${p.userAgent}`))).toEqual(new Set(['GET gatehouse-health-probe']));

    // Every request goes to h1; h2 sees probes only.
    for (let i = 0; i < 20; i++) expect(await httpGet(port, `/work/${i}`)).toEqual({ status: 200, body: 'h1' });
    expect(h2.served).toBe(0);

    h2.health = 200;
    await expect.poll(async () => (await backendView(gh, 'app', h2.address))?.healthy, { timeout: 3_000, interval: 20 }).toBe(true);
    expect(healthyMetric(await metrics(gh), h2.address)).toBe(1);
    expect(await gh.waitForLog((l) => l.msg === 'backend healthy' && l.backend === h2.address)).toMatchObject({ passes: 2 });
    const bodies: string[] = [];
    for (let i = 0; i < 12 && !bodies.includes('h2'); i++) bodies.push((await httpGet(port, `/again/${i}`)).body);
    expect(bodies).toContain('h2');
    expect(h2.served).toBe(1);
    expect(await gh.stop()).toBe(0);
  });
});

/** The actors of upstream `name` in `/actors`: the `upstream:NAME` node, with its children's ids. */
async function upstreamActors(gh: Daemon): Promise<{ tree: ActorNode; ids: (prefix: string) => string[]; parentOf: (id: string) => string | undefined }> {
  const tree = await gh.json<ActorNode>('/actors');
  const all = findNodes(tree, () => true);
  return {
    tree,
    ids: (prefix) => all.filter((x) => x.node.id.startsWith(prefix)).map((x) => x.node.id).sort(),
    parentOf: (id) => all.find((x) => x.node.id === id)?.parent?.id,
  };
}

/** Opens client connections until one is proxied to `target`; closes the others. */
async function connectionTo(port: number, target: KillableEcho, others: KillableEcho[]): Promise<Awaited<ReturnType<typeof connect>>> {
  const extra: Awaited<ReturnType<typeof connect>>[] = [];
  try {
    for (let i = 0; i < 12; i++) {
      const before = target.served;
      const conn = await connect(port);
      expect(await conn.send(`hello ${i}`)).toBe(`hello ${i}`);
      if (target.served > before) return conn;
      extra.push(conn);
    }
    throw new Error(`no connection reached ${target.address} (others served ${others.map((o) => o.served).join(', ')})`);
  } finally {
    for (const c of extra) await c.close();
  }
}

describe('reload and the upstreams subtree', () => {
  const withProbesAndBreakers = `
healthCheck: { type: tcp, interval: 200ms, timeout: 100ms }
circuitBreaker: { failureThreshold: 3, successThreshold: 1, openFor: 1s }`;

  test('a backend removed while a connection through it is open: its probe and breaker stop, the others stay, the connection works until closed; a removed upstream loses its supervisor', async () => {
    await using backends = await startBackends(4);
    const [a, b, c, d] = [...backends] as [KillableEcho, KillableEcho, KillableEcho, KillableEcho];
    using dir = tempDir();
    const cfg = (app: KillableEcho[], other: boolean) =>
      config(
        [{ name: 'app', backends: app.map((x) => x.address), extra: withProbesAndBreakers }, ...(other ? [{ name: 'other', backends: [d.address], extra: withProbesAndBreakers }] : [])],
        [['tcp-in', 'app'], ...(other ? ([['tcp-other', 'other']] as [string, string][]) : [])],
      );
    const file = dir.write('gh.yaml', cfg([a, b, c], true));
    await using gh = await Daemon.start(file);
    const port = gh.port('tcp-in');

    const before = await upstreamActors(gh);
    const actorIds = (u: string, xs: KillableEcho[]) => xs.flatMap((x) => [`breaker:${u}/${x.address}`, `probe:${u}/${x.address}`]).sort();
    expect(before.ids('probe:').concat(before.ids('breaker:')).sort()).toEqual([...actorIds('app', [a, b, c]), ...actorIds('other', [d])].sort());
    for (const id of actorIds('app', [a, b, c])) expect(before.parentOf(id)).toBe('upstream:app');
    expect(before.parentOf('upstream:app')).toBe('upstreams');
    expect(before.parentOf('upstream:other')).toBe('upstreams');

    const open = await connectionTo(port, b, [a, c]);
    onTestFinished(() => open.close());
    writeFileSync(file, cfg([a, c], true));
    const res = await gh.admin('/reload', { method: 'POST' });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ changed: ['upstream:app'], added: [], removed: [] });

    const probesOf = (x: KillableEcho): number => x.accepted - x.served;
    const bProbes = probesOf(b);
    const after = await upstreamActors(gh);
    expect(after.ids('probe:').concat(after.ids('breaker:')).sort()).toEqual([...actorIds('app', [a, c]), ...actorIds('other', [d])].sort());
    for (const id of actorIds('app', [a, c])) expect(after.parentOf(id)).toBe('upstream:app');
    // None of them crashed or was restarted by its supervisor meanwhile.
    for (const n of findNodes(after.tree, (x) => x.type === 'breaker' || x.type === 'healthProbe')) expect(n.node.restarts).toBe(0);
    const view = await gh.json<UpstreamsBody>('/upstreams');
    expect(view.upstreams.find((u) => u.name === 'app')).toEqual({
      name: 'app',
      balance: 'round_robin',
      backends: [a, c].map((x) => ({ address: x.address, healthy: true, breaker: 'closed', activeConnections: expect.any(Number), weight: 1, admin: 'ready' })),
    });
    const m = await metrics(gh);
    expect(healthyMetric(m, b.address)).toBeUndefined();
    expect(breakerMetric(m, b.address)).toBeUndefined();

    // Its probe has stopped probing (one may have been under way): the others' go on, every 200 ms.
    const aProbes = probesOf(a);
    await expect.poll(() => probesOf(a), { timeout: 5_000 }).toBeGreaterThanOrEqual(aProbes + 3);
    expect(probesOf(b)).toBeLessThanOrEqual(bProbes + 1);

    // The open connection keeps its backend; new ones go to the two that stay.
    expect(await open.send('after the reload')).toBe('after the reload');
    const bServed = b.served;
    for (let i = 0; i < 10; i++) expect(await echoRoundTrip(port, payload(`kept-${i}`))).toBeUndefined();
    expect(b.served).toBe(bServed);
    expect(await open.send('still')).toBe('still');
    await open.close();
    await expect.poll(() => b.sockets.size, { timeout: 5_000 }).toBe(0);
    await drained(gh, 0);
    expect((await gh.json<UpstreamsBody>('/upstreams')).upstreams.flatMap((u) => u.backends.map((x) => x.activeConnections))).toEqual([0, 0, 0]);

    // Removing a whole upstream (and the listener using it) removes its supervisor and actors.
    writeFileSync(file, cfg([a, c], false));
    const res2 = await gh.admin('/reload', { method: 'POST' });
    expect(res2.status).toBe(200);
    expect(((await res2.json()) as { removed: string[] }).removed.sort()).toEqual(['listener:tcp-other', 'upstream:other']);
    const dProbes = probesOf(d);
    const last = await upstreamActors(gh);
    expect(last.ids('upstream:')).toEqual(['upstream:app']);
    expect(last.ids('probe:').concat(last.ids('breaker:')).sort()).toEqual(actorIds('app', [a, c]));
    expect((await gh.json<UpstreamsBody>('/upstreams')).upstreams.map((u) => u.name)).toEqual(['app']);
    expect(healthyMetric(await metrics(gh), d.address, 'other')).toBeUndefined();
    const cProbes = probesOf(c);
    await expect.poll(() => probesOf(c), { timeout: 5_000 }).toBeGreaterThanOrEqual(cProbes + 3);
    expect(probesOf(d)).toBeLessThanOrEqual(dProbes + 1);
    expect(await echoRoundTrip(port, payload('last'))).toBeUndefined();
    expect(await gh.stop()).toBe(0);
  });

  // A removed backend's state-table row is retired, not freed, while its connections stay open:
  // a backend added meanwhile gets another row, and the old connection's end is not taken off it.
  test('a removed backend whose table row goes to a new backend while a connection to the removed one is still open: the new backend\'s count stays right', async () => {
    await using backends = await startBackends(3);
    const [a, b, e] = [...backends] as [KillableEcho, KillableEcho, KillableEcho];
    using dir = tempDir();
    const cfg = (app: KillableEcho[]) => config([{ name: 'app', backends: app.map((x) => x.address), extra: withProbesAndBreakers }], [['tcp-in', 'app']]);
    const file = dir.write('gh.yaml', cfg([a, b]));
    await using gh = await Daemon.start(file);
    const port = gh.port('tcp-in');
    const open = await connectionTo(port, b, [a]);
    onTestFinished(() => open.close());
    // b leaves (its row in the state table is freed), then e comes (and gets that row).
    writeFileSync(file, cfg([a]));
    expect((await gh.admin('/reload', { method: 'POST' })).status).toBe(200);
    writeFileSync(file, cfg([a, e]));
    expect((await gh.admin('/reload', { method: 'POST' })).status).toBe(200);
    expect((await backendView(gh, 'app', e.address))?.activeConnections).toBe(0);
    expect(await open.send('old')).toBe('old');
    await open.close();
    await drained(gh, 0);
    await expect.poll(() => b.sockets.size, { timeout: 5_000 }).toBe(0);
    // The old connection's end must not be taken off the new backend's count.
    expect((await gh.json<UpstreamsBody>('/upstreams')).upstreams[0]!.backends.map((x) => [x.address, x.activeConnections])).toEqual([
      [a.address, 0],
      [e.address, 0],
    ]);
    expect(await gh.stop()).toBe(0);
  });
});

describe('a shard crash and the backends\' counts', () => {
  // Each shard keeps its share of every backend's ACTIVE; the ShardActor takes a crashed shard's
  // share off, as it gives back the listener's places.
  test('connections that die with a crashed shard are taken off their backends\' activeConnections', async () => {
    await using backends = await startBackends(2);
    using dir = tempDir();
    await using gh = await Daemon.start(dir.write('gh.yaml', config([{ name: 'app', backends: backends.map((x) => x.address), extra: breakerOnly }], [['tcp-in', 'app']])), { debug: true });
    const port = gh.port('tcp-in');
    const conns = await Promise.all(Array.from({ length: 16 }, () => connect(port)));
    onTestFinished(async () => void (await Promise.all(conns.map((c) => c.close()))));
    for (const [i, c] of conns.entries()) expect(await c.send(`ping ${i}`)).toBe(`ping ${i}`);
    const active = async () => (await gh.json<UpstreamsBody>('/upstreams')).upstreams[0]!.backends.reduce((n, b) => n + b.activeConnections, 0);
    expect(await active()).toBe(16);
    const onShard0 = findNodes(await gh.json<ActorNode>('/actors'), (n) => n.type === 'connection' && n.id.startsWith('conn:0:')).length;
    expect(onShard0).toBeGreaterThan(0);

    expect((await gh.admin('/debug/shards/0/crash', { method: 'POST' })).status).toBe(202);
    await gh.waitForLog((l) => l.msg === 'shard down' && l.shard === 0);
    await until(async () => (await gh.admin('/readyz')).status === 200, 10_000, '/readyz back to 200');
    await expect.poll(() => conns.filter((c) => c.socket.destroyed || c.socket.readableEnded).length, { timeout: 10_000 }).toBe(onShard0);
    // The listener's gauge has them given back...
    expect(metric(await metrics(gh), 'gatehouse_connections_active', { listener: 'tcp-in' })).toBe(16 - onShard0);
    // ...and so must the backends.
    await expect.poll(active, { timeout: 3_000 }).toBe(16 - onShard0);
    await Promise.all(conns.map((c) => c.close()));
    await expect.poll(active, { timeout: 5_000 }).toBe(0);
    expect(await gh.stop()).toBe(0);
  });
});
