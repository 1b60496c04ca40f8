import { describe, expect, test } from 'vitest';
import { Daemon, metric, tempDir, until } from '../helpers/daemon.ts';
import { connect, roundTrip, startEchoServer } from '../helpers/net.ts';
import type { StateView } from '../../src/admin/state-view.ts';

interface Node {
  id: string;
  type: string;
  state: string;
  restarts: number;
  peer?: string;
  children: Node[];
}

const WATCHDOG_MS = 500;
/** Scheduling on a shared 2-core machine: the DOWN may come this long after the limit. */
const SLACK_MS = 3_000;

/** The client-side ports of the connections each shard holds (its connections' `peer`). */
function peersByShard(root: Node): Map<string, Set<number>> {
  const out = new Map<string, Set<number>>();
  const shards = root.children.find((c) => c.id === 'shards')!;
  for (const s of shards.children) {
    const ports = new Set<number>();
    const walk = (n: Node): void => {
      if (n.type === 'connection' && n.peer) ports.add(Number(n.peer.split(':').pop()));
      n.children.forEach(walk);
    };
    walk(s);
    out.set(s.id, ports);
  }
  return out;
}

describe('the shard watchdog', () => {
  test('a shard thread stuck in a loop is killed as hung and restarted while the other shard serves', async () => {
    await using echo = await startEchoServer();
    using dir = tempDir();
    const file = dir.write(
      'gh.yaml',
      `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2, shutdownTimeout: 5s, watchdog: ${WATCHDOG_MS}ms }
upstreams: [ { name: app, backends: [ "127.0.0.1:${echo.port}" ] } ]
listeners: [ { name: tcp-in, protocol: tcp, listen: "127.0.0.1:0", upstream: app, maxConnections: 100, maxConnectionsPerIp: 100 } ]
`,
    );
    await using gh = await Daemon.start(file, { debug: true });
    const port = gh.port('tcp-in');

    const conns = await Promise.all(Array.from({ length: 16 }, () => connect(port)));
    for (const [i, c] of conns.entries()) expect(await c.send(`ping ${i}`)).toBe(`ping ${i}`);
    const peers = peersByShard(await gh.json<Node>('/actors'));
    const onShard = (id: string) => conns.filter((c) => peers.get(id)!.has(c.socket.localPort!));
    const [on0, on1] = [onShard('shard-0'), onShard('shard-1')];
    expect(on0.length + on1.length).toBe(16);
    expect(on1.length).toBeGreaterThan(0);

    const injectedAt = performance.now();
    expect((await gh.admin('/debug/shards/1/hang', { method: 'POST' })).status).toBe(202);
    // Shard 0 serves its connections while shard 1 is stuck.
    for (const c of on0) expect(await c.send('while 1 hangs')).toBe('while 1 hangs');

    const down = await gh.waitForLog((l) => l.msg === 'shard down' && l.shard === 1, WATCHDOG_MS + SLACK_MS + 5_000);
    expect(performance.now() - injectedAt).toBeLessThan(WATCHDOG_MS + SLACK_MS);
    expect(down.reason).toBe('hung');
    expect(gh.logs.some((l) => l.msg === 'shard hung: no heartbeat, terminating its thread' && l.shard === 1)).toBe(true);
    // The supervisor report names the reason too.
    await gh.waitForLog((l) => l.msg === 'supervisor report' && l.offender === 'shard-1' && l.reason === 'hung');

    // The hung thread's connections died with it; shard 0's did not.
    await expect.poll(() => on1.filter((c) => c.socket.destroyed || c.socket.readableEnded).length, { timeout: 10_000 }).toBe(on1.length);
    await until(async () => (await gh.admin('/readyz')).status === 200, 10_000, '/readyz back to 200');
    const shards = (await gh.json<Node>('/actors')).children.find((c) => c.id === 'shards')!;
    expect(shards.children.map((s) => [s.id, s.state, s.restarts])).toEqual([
      ['shard-0', 'running', 0],
      ['shard-1', 'running', 1],
    ]);
    for (const c of on0) expect(await c.send('after restart')).toBe('after restart');
    // The restarted shard serves: new connections go to both shards again.
    for (let i = 0; i < 8; i++) expect(await roundTrip(port, `new ${i}`)).toBe(`new ${i}`);

    // The hung shard's places were given back: only shard 0's connections count.
    const m = await (await gh.admin('/metrics')).text();
    expect(metric(m, 'gatehouse_connections_active', { listener: 'tcp-in' })).toBe(on0.length);
    expect(metric(m, 'gatehouse_connections_total', { listener: 'tcp-in', outcome: 'error' })).toBe(on1.length);
    const state = await gh.json<StateView>('/state');
    expect(state.listeners[0]!.activeByShard.slice(0, 2)).toEqual([on0.length, 0]);
    expect(state.backends[0]!.activeByShard.slice(0, 2)).toEqual([on0.length, 0]);

    await Promise.all(conns.map((c) => c.close()));
    await expect.poll(async () => (await gh.json<StateView>('/state')).idle, { timeout: 10_000 }).toBe(true);
    expect(await gh.stop()).toBe(0);
  });

  test('a shard in the main thread cannot be watched: hanging it is refused', async () => {
    using dir = tempDir();
    await using gh = await Daemon.start(dir.write('gh.yaml', `admin: { listen: "127.0.0.1:0" }\nruntime: { workers: 0 }\n`), { debug: true });
    const r = await gh.admin('/debug/shards/0/hang', { method: 'POST' });
    expect(r.status).toBe(409);
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe('shard_not_watched');
    expect((await gh.admin('/readyz')).status).toBe(200);
    expect(await gh.stop()).toBe(0);
  });
});
