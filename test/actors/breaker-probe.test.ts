import net from 'node:net';
import http from 'node:http';
import { once } from 'node:events';
import pino from 'pino';
import { describe, expect, test } from 'vitest';
import { Supervisor } from '../../src/supervisors/supervisor.ts';
import { MachineActor } from '../../src/runtime/machine-actor.ts';
import { live } from '../../src/runtime/live.ts';
import { Upstreams } from '../../src/daemon/upstreams.ts';
import { Balancer, type BreakerReport } from '../../src/workers/balancer.ts';
import { B, MAX_BACKENDS, SlotAllocator, StateTable } from '../../src/workers/state-table.ts';
import { toShardConfig, type ShardUpstream } from '../../src/workers/shard-config.ts';
import { parseConfig } from '../../src/config/load.ts';
import type { UpstreamConfig } from '../../src/config/types.ts';

const log = pino({ level: 'silent' });

/** Upstreams parsed from YAML, as the daemon gets them. */
function upstreams(yaml: string): UpstreamConfig[] {
  return parseConfig(`upstreams:\n${yaml}`, 'test.yaml').upstreams;
}

/** The upstreams subtree under a root supervisor, as in the daemon, with its own state table. */
async function startPlane(ups: UpstreamConfig[]) {
  const table = StateTable.create();
  const slots = new SlotAllocator(MAX_BACKENDS, (s) => table.resetBackend(s));
  const slotOf = (u: string, a: string): number => slots.get(`${u}/${a}`);
  const plane = new Upstreams({ table, slotOf, log });
  const root = await new Supervisor({ id: 'root', strategy: 'one_for_one', maxRestarts: 10, periodMs: 10_000, children: [plane.child(ups)] }, { log }).start();
  const shardUpstream = (name: string): ShardUpstream =>
    toShardConfig({ ...parseConfig('{}', 'x.yaml'), upstreams: ups }, { listenerSlot: () => 0, backendSlot: slotOf, resolvedPort: () => undefined }).upstreams.find((u) => u.name === name)!;
  /** A shard's balancer whose reports reach the breakers, as shard messages do. */
  const balancer = (name: string, shard = 0): Balancer =>
    new Balancer(shardUpstream(name), table, shard, Math.random, (slot: number, event: BreakerReport) => plane.report(slot, { type: event }));
  const actor = (id: string): MachineActor | undefined => live.list().find((a) => a.id === id && a.status === 'running') as MachineActor | undefined;
  return { table, slotOf, plane, root, balancer, actor, [Symbol.asyncDispose]: async () => void (await root.shutdown('infinity')) };
}

/** A TCP server on a port of its own that can be stopped and started again on that port. */
async function flappingServer() {
  let server: net.Server | undefined;
  const sockets = new Set<net.Socket>();
  let port = 0;
  let accepted = 0;
  const up = async (): Promise<void> => {
    server = net.createServer((s) => {
      accepted++;
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => sockets.delete(s));
      s.pipe(s);
    });
    server.listen(port, '127.0.0.1');
    await once(server, 'listening');
    port = (server.address() as net.AddressInfo).port;
  };
  const down = async (): Promise<void> => {
    if (!server) return;
    const s = server;
    server = undefined;
    s.close();
    for (const c of sockets) c.destroy();
    await once(s, 'close');
  };
  await up();
  return { get port() { return port; }, get accepted() { return accepted; }, up, down, [Symbol.asyncDispose]: down };
}

const breakerOf = (t: StateTable, slot: number): string => ['closed', 'open', 'half_open'][t.backendGet(slot, B.BREAKER)]!;

describe('BreakerActor', () => {
  const cfg = (openFor = '150ms', successThreshold = 1) => `
  - name: app
    healthCheck: { enabled: false }
    circuitBreaker: { failureThreshold: 3, successThreshold: ${successThreshold}, openFor: ${openFor} }
    backends: [ "127.0.0.1:1", "127.0.0.1:2" ]`;

  test('opens after failureThreshold consecutive failures seen by any shard; a success in between resets the count', async () => {
    await using p = await startPlane(upstreams(cfg('1h')));
    const [s0, s1] = [p.balancer('app', 0), p.balancer('app', 1)];
    const a = s0.upstream.backends[0]!;
    const slot = a.slot;
    s0.failed(a, false);
    s1.failed(s1.upstream.backends[0]!, false);
    s0.succeeded(a, false);
    s1.failed(a, false);
    s0.failed(a, false);
    // Two in a row since the success: still closed.
    expect(p.table.backendGet(slot, B.FAILS)).toBe(2);
    expect(breakerOf(p.table, slot)).toBe('closed');
    s1.failed(a, false);
    await expect.poll(() => breakerOf(p.table, slot)).toBe('open');
    expect(p.actor(`breaker:app/${a.address}`)?.state).toBe('open');
    // Open: the balancers skip it on every shard.
    for (let i = 0; i < 4; i++) expect(s0.pick()?.address).toBe('127.0.0.1:2');
  });

  test('half-opens after openFor, hands exactly one trial permit across shards, closes after successThreshold trials', async () => {
    await using p = await startPlane(upstreams(cfg('100ms', 2)));
    const shards = [p.balancer('app', 0), p.balancer('app', 1)];
    const a = shards[0]!.upstream.backends[0]!;
    for (let i = 0; i < 3; i++) shards[i % 2]!.failed(a, false);
    await expect.poll(() => breakerOf(p.table, a.slot)).toBe('open');
    await expect.poll(() => breakerOf(p.table, a.slot), { timeout: 5_000 }).toBe('half_open');
    // Both shards pick over and over: exactly one pick is the trial, on the half-open backend.
    const picks = Array.from({ length: 20 }, (_, i) => {
      const b = shards[i % 2]!;
      const got = b.pick();
      return { address: got?.address, trial: b.trial };
    });
    expect(picks.filter((x) => x.trial)).toEqual([{ address: a.address, trial: true }]);
    expect(picks.filter((x) => x.address === a.address)).toHaveLength(1);
    // First trial succeeds: still half-open (successThreshold 2), a new permit is out.
    shards[0]!.succeeded(a, true);
    await expect.poll(() => p.table.backendGet(a.slot, B.PERMIT)).toBe(1);
    expect(breakerOf(p.table, a.slot)).toBe('half_open');
    const second = shards[1]!;
    let got;
    for (let i = 0; i < 4 && got?.address !== a.address; i++) got = second.pick();
    expect(got?.address).toBe(a.address);
    expect(second.trial).toBe(true);
    second.succeeded(a, true);
    await expect.poll(() => breakerOf(p.table, a.slot)).toBe('closed');
    expect(p.table.backendGet(a.slot, B.FAILS)).toBe(0);
  });

  test('a failed trial opens it again; an abandoned trial gives the permit back', async () => {
    await using p = await startPlane(upstreams(cfg('100ms')));
    const s0 = p.balancer('app', 0);
    const a = s0.upstream.backends[0]!;
    for (let i = 0; i < 3; i++) s0.failed(a, false);
    await expect.poll(() => breakerOf(p.table, a.slot), { timeout: 5_000 }).toBe('half_open');
    const take = (): void => {
      for (let i = 0; i < 4; i++) if (s0.pick()?.address === a.address) return;
      throw new Error('no trial');
    };
    take();
    expect(p.table.backendGet(a.slot, B.PERMIT)).toBe(0);
    s0.abandoned(a, true);
    await expect.poll(() => p.table.backendGet(a.slot, B.PERMIT)).toBe(1);
    take();
    s0.failed(a, true);
    await expect.poll(() => breakerOf(p.table, a.slot)).toBe('open');
    expect(p.table.backendGet(a.slot, B.PERMIT)).toBe(0);
    await expect.poll(() => breakerOf(p.table, a.slot), { timeout: 5_000 }).toBe('half_open');
  });

  test('a crashed breaker is restarted in the state the table holds: an open breaker stays open', async () => {
    await using p = await startPlane(upstreams(cfg('1h')));
    const s0 = p.balancer('app', 0);
    const a = s0.upstream.backends[0]!;
    for (let i = 0; i < 3; i++) s0.failed(a, false);
    await expect.poll(() => breakerOf(p.table, a.slot)).toBe('open');
    const id = `breaker:app/${a.address}`;
    const first = p.actor(id)!;
    expect(first.crash()).toBe(true);
    await expect.poll(() => p.actor(id) !== undefined && p.actor(id) !== first).toBe(true);
    expect(p.actor(id)!.state).toBe('open');
    expect(breakerOf(p.table, a.slot)).toBe('open');
    // The registry of breakers by slot holds the new incarnation only.
    expect(p.plane.breakers.sizes()).toEqual({ byId: 2, slot: 2 });
    expect(p.plane.breakers.lookup('slot', String(a.slot)).map((e) => e.actor)).toEqual([p.actor(id)]);
  });
});

describe('HealthProbeActor', () => {
  test('tcp: unhealthy after unhealthyThreshold failed probes, healthy again after healthyThreshold passes', async () => {
    await using srv = await flappingServer();
    await using p = await startPlane(
      upstreams(`
  - name: app
    circuitBreaker: { enabled: false }
    healthCheck: { type: tcp, interval: 50ms, timeout: 50ms, unhealthyThreshold: 3, healthyThreshold: 2 }
    backends: [ "127.0.0.1:${srv.port}" ]`),
    );
    const slot = p.slotOf('app', `127.0.0.1:${srv.port}`);
    // Probed at once.
    await expect.poll(() => srv.accepted).toBeGreaterThanOrEqual(1);
    expect(p.table.backendGet(slot, B.HEALTHY)).toBe(1);
    await srv.down();
    await expect.poll(() => p.table.backendGet(slot, B.HEALTHY), { timeout: 5_000 }).toBe(0);
    const before = srv.accepted;
    await srv.up();
    await expect.poll(() => p.table.backendGet(slot, B.HEALTHY), { timeout: 5_000 }).toBe(1);
    // Two passes were needed, not one.
    expect(srv.accepted - before).toBeGreaterThanOrEqual(2);
  });

  test('http: a backend that alternates 200 and 500 never flips the verdict (no flapping)', async () => {
    let n = 0;
    const seen: number[] = [];
    const server = http.createServer((req, res) => {
      res.statusCode = n++ % 2 === 0 ? 500 : 200;
      res.end(req.url);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as net.AddressInfo).port;
    try {
      await using p = await startPlane(
        upstreams(`
  - name: app
    circuitBreaker: { enabled: false }
    healthCheck: { type: http, path: /healthz, interval: 40ms, timeout: 40ms, unhealthyThreshold: 2, healthyThreshold: 2 }
    backends: [ "127.0.0.1:${port}" ]`),
      );
      const slot = p.slotOf('app', `127.0.0.1:${port}`);
      server.on('request', () => seen.push(p.table.backendGet(slot, B.HEALTHY)));
      await expect.poll(() => seen.length, { timeout: 5_000 }).toBeGreaterThanOrEqual(10);
      expect(new Set(seen)).toEqual(new Set([1]));
      // Two 500s in a row make it unhealthy; then two 200s in a row make it healthy.
      n = 0;
      server.removeAllListeners('request');
      let script = [500, 500];
      server.on('request', (_req, res) => {
        res.statusCode = script.shift() ?? 500;
        res.end();
      });
      await expect.poll(() => p.table.backendGet(slot, B.HEALTHY), { timeout: 5_000 }).toBe(0);
      script = [200, 200, 200, 200, 200, 200, 200, 200, 200, 200];
      server.removeAllListeners('request');
      server.on('request', (_req, res) => {
        res.statusCode = script.shift() ?? 200;
        res.end();
      });
      await expect.poll(() => p.table.backendGet(slot, B.HEALTHY), { timeout: 5_000 }).toBe(1);
    } finally {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    }
  });

  test('a crashed probe is restarted; the verdict is neither lost nor flipped', async () => {
    await using srv = await flappingServer();
    await using p = await startPlane(
      upstreams(`
  - name: app
    circuitBreaker: { enabled: false }
    healthCheck: { type: tcp, interval: 50ms, timeout: 50ms, unhealthyThreshold: 2, healthyThreshold: 3 }
    backends: [ "127.0.0.1:${srv.port}" ]`),
    );
    const slot = p.slotOf('app', `127.0.0.1:${srv.port}`);
    await srv.down();
    await expect.poll(() => p.table.backendGet(slot, B.HEALTHY), { timeout: 5_000 }).toBe(0);
    const id = `probe:app/127.0.0.1:${srv.port}`;
    const first = p.actor(id)!;
    first.crash();
    await expect.poll(() => p.actor(id) !== undefined && p.actor(id) !== first).toBe(true);
    // Still unhealthy, and still probing: it comes back only once the backend does.
    expect(p.table.backendGet(slot, B.HEALTHY)).toBe(0);
    await srv.up();
    await expect.poll(() => p.table.backendGet(slot, B.HEALTHY), { timeout: 5_000 }).toBe(1);
  });

  test('a reload stops the probe and breaker of a removed backend and leaves the others running', async () => {
    const two = upstreams(`
  - name: app
    healthCheck: { interval: 1h }
    backends: [ "127.0.0.1:1", "127.0.0.1:2" ]
  - name: other
    healthCheck: { interval: 1h }
    backends: [ "127.0.0.1:3" ]`);
    const one = upstreams(`
  - name: app
    healthCheck: { interval: 1h }
    backends: [ "127.0.0.1:2" ]`);
    await using p = await startPlane(two);
    const kept = p.actor('probe:app/127.0.0.1:2')!;
    expect(p.actor('breaker:app/127.0.0.1:1')).toBeDefined();
    expect(p.plane.breakers.size).toBe(3);
    await p.plane.apply(two, one);
    expect(p.actor('probe:app/127.0.0.1:1')).toBeUndefined();
    expect(p.actor('breaker:app/127.0.0.1:1')).toBeUndefined();
    expect(p.actor('upstream:other')).toBeUndefined();
    expect(p.actor('probe:app/127.0.0.1:2')).toBe(kept);
    // The breaker index was cleaned by the removed breakers' DOWN.
    expect(p.plane.breakers.sizes()).toEqual({ byId: 1, slot: 1 });
    // Switching the breaker off publishes it closed; settings changes restart the actor.
    const off = upstreams(`
  - name: app
    healthCheck: { interval: 2h }
    circuitBreaker: { enabled: false }
    backends: [ "127.0.0.1:2" ]`);
    const slot = p.slotOf('app', '127.0.0.1:2');
    p.table.backendSet(slot, B.BREAKER, 1);
    await p.plane.apply(one, off);
    expect(p.table.backendGet(slot, B.BREAKER)).toBe(0);
    expect(p.plane.breakers.size).toBe(0);
    expect(p.actor('probe:app/127.0.0.1:2')).not.toBe(kept);
    expect(p.actor('probe:app/127.0.0.1:2')).toBeDefined();
  });
});
