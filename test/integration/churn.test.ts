import { describe, expect, onTestFinished, test } from 'vitest';
import { Daemon, metric, tempDir } from '../helpers/daemon.ts';
import { startBackends } from '../helpers/backends.ts';
import { Load } from '../helpers/load.ts';
import { drained, findNodes, upstreamsConfig, type ActorNode, type UpstreamsBody } from '../helpers/upstreams.ts';

const TOTAL = 20_000;
const IN_FLIGHT = 50;
const BACKENDS = 10;

describe('connection churn with a backend killed mid-stream', () => {
  test(`${TOTAL} echo connections, ${IN_FLIGHT} in flight, to ${BACKENDS} backends at workers: 2, one killed halfway: no failure a gateway could hide, every gauge back to zero`, async () => {
    await using backends = await startBackends(BACKENDS);
    using dir = tempDir();
    const extra = `
healthCheck: { type: tcp, interval: 200ms, timeout: 200ms, unhealthyThreshold: 2, healthyThreshold: 2 }
circuitBreaker: { failureThreshold: 3, successThreshold: 1, openFor: 1s }`;
    await using gh = await Daemon.start(dir.write('gh.yaml', upstreamsConfig([{ name: 'app', backends: backends.map((b) => b.address), extra }], [['tcp-in', 'app']])));
    const port = gh.port('tcp-in');
    const load = new Load({ port, parallel: IN_FLIGHT, max: TOTAL, deadlineMs: 60_000, payloadBytes: 32 });
    onTestFinished(() => load.stop());

    // Halfway through, one backend in ten dies: its server closes and its sockets are destroyed.
    await load.waitFor(() => load.finished >= TOTAL / 2, 30_000, 'half the connections');
    const victim = backends[BACKENDS - 3]!;
    const killStart = performance.now();
    await victim.kill();
    const killEnd = performance.now();
    const victimServed = victim.served;
    await load.done;

    // Every connection was made and every round trip finished.
    expect(load.started).toBe(TOTAL);
    expect(load.ok + load.failures.length).toBe(TOTAL);
    // Inherent failures: a round trip whose bytes were on the dying backend's connection when it
    // was destroyed (or sat in its accept queue when its listening socket closed: the gateway had
    // connected and forwarded the request) is lost, since an L4 gateway cannot replay bytes it
    // already forwarded. Typically 0-2 here. Any other failure is the gateway's: each failed
    // connect to the dead backend must be retried on another one (connectRetries), and the breaker
    // and the probes then keep traffic away. So every failure was in flight during the kill, and
    // there are at most as many as the connections in flight then.
    const unexplained = load.failures.filter((f) => !(f.startedAt <= killEnd && f.endedAt >= killStart));
    expect(unexplained).toEqual([]);
    expect(load.failures.length).toBeLessThanOrEqual(IN_FLIGHT);
    for (const f of load.failures) expect(String(f.error)).toMatch(/ECONNRESET|closed after/);
    expect(victim.served).toBe(victimServed);
    // The nine others took the rest, all of them.
    for (const b of backends) if (b !== victim) expect(b.served).toBeGreaterThan(TOTAL / BACKENDS / 2);

    // Every gauge goes back to zero: connections per listener (summed over shards), live
    // connection actors, each shard's listener and its registry, each backend's active connections.
    const text = await drained(gh, TOTAL, 'tcp-in', 20_000);
    // Each connection reached a backend (failed connects were retried): no backend_error,
    // no_backend or timeout outcome. The lost ones had opened, so they count as ok too.
    expect(metric(text, 'gatehouse_connections_total', { listener: 'tcp-in', outcome: 'ok' })).toBe(TOTAL);
    expect(metric(text, 'gatehouse_actors', { type: 'connection' }) ?? 0).toBe(0);
    await expect
      .poll(async () => (await gh.json<UpstreamsBody>('/upstreams')).upstreams[0]!.backends.map((b) => b.activeConnections), { timeout: 10_000 })
      .toEqual(backends.map(() => 0));
    const tree = await gh.json<ActorNode>('/actors');
    expect(findNodes(tree, (n) => n.type === 'connection')).toEqual([]);
    const listeners = findNodes(tree, (n) => n.type === 'listener').map((x) => x.node);
    expect(listeners).toHaveLength(2);
    for (const l of listeners) expect([l.connections, l.registry]).toEqual([0, { byId: 0 }]);

    // The dead backend is out of rotation (probes and breaker); the others are healthy and closed.
    const view = (await gh.json<UpstreamsBody>('/upstreams')).upstreams[0]!.backends;
    const dead = view.find((b) => b.address === victim.address)!;
    expect(dead.healthy === false || dead.breaker !== 'closed').toBe(true);
    await expect
      .poll(async () => (await gh.json<UpstreamsBody>('/upstreams')).upstreams[0]!.backends.filter((b) => b.address !== victim.address).map((b) => [b.healthy, b.breaker]))
      .toEqual(backends.slice(1).map(() => [true, 'closed']));
    expect(await gh.stop()).toBe(0);
  }, 60_000);
});
