import { describe, expect, test } from 'vitest';
import { Daemon, metric, tempDir, until } from '../helpers/daemon.ts';
import { connect, roundTrip, startEchoServer } from '../helpers/net.ts';

interface Node {
  id: string;
  type: string;
  state: string;
  restarts: number;
  children: Node[];
}

describe('a crashed shard', () => {
  test('is restarted by its supervisor while the other shard keeps serving', async () => {
    await using echo = await startEchoServer();
    using dir = tempDir();
    const file = dir.write(
      'gh.yaml',
      `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2, shutdownTimeout: 5s }
upstreams: [ { name: app, backends: [ "127.0.0.1:${echo.port}" ] } ]
listeners: [ { name: tcp-in, protocol: tcp, listen: "127.0.0.1:0", upstream: app } ]
`,
    );
    await using gh = await Daemon.start(file, { debug: true });
    const port = gh.port('tcp-in');

    // Long-lived connections spread over both shards by the kernel.
    const conns = await Promise.all(Array.from({ length: 24 }, () => connect(port)));
    for (const [i, c] of conns.entries()) expect(await c.send(`ping ${i}`)).toBe(`ping ${i}`);
    const perShard = (await gh.json<Node>('/actors')).children
      .find((c) => c.id === 'shards')!
      .children.map((s) => s.children[0]!.children[0]!.children.length);
    expect(perShard.reduce((a, b) => a + b, 0)).toBe(24);

    const crashed = await gh.admin('/debug/shards/0/crash', { method: 'POST' });
    expect(crashed.status).toBe(202);
    await gh.waitForLog((l) => l.msg === 'shard down' && l.shard === 0);
    // The thread's sockets close as it goes (a moment after the DOWN): wait for exactly those.
    await expect.poll(() => conns.filter((c) => c.socket.destroyed || c.socket.readableEnded).length, { timeout: 10_000 }).toBe(perShard[0]);

    // Connections on the surviving shard keep flowing; those on the crashed one are gone.
    const alive: typeof conns = [];
    for (const c of conns) {
      try {
        expect(await c.send('still there?')).toBe('still there?');
        alive.push(c);
      } catch {
        // This connection was on the crashed shard.
      }
    }
    expect(alive.length).toBe(perShard[1]);
    // New connections are served while shard 0 restarts (the kernel sends them to shard 1).
    expect(await roundTrip(port, 'new while restarting')).toBe('new while restarting');

    await until(async () => (await gh.admin('/readyz')).status === 200, 10_000, '/readyz back to 200');
    const shards = (await gh.json<Node>('/actors')).children.find((c) => c.id === 'shards')!;
    const shard0 = shards.children.find((s) => s.id === 'shard-0')!;
    expect(shard0.restarts).toBe(1);
    expect(shard0.state).toBe('running');
    const m = await (await gh.admin('/metrics')).text();
    expect(metric(m, 'gatehouse_shard_up', { shard: '0' })).toBe(1);
    expect(metric(m, 'gatehouse_actor_restarts_total', { supervisor: 'shards' })).toBe(1);
    // The dead shard's connections were given back: the gauge counts only the live ones.
    expect(metric(m, 'gatehouse_connections_active', { listener: 'tcp-in' })).toBe(alive.length);
    for (const c of alive) expect(await c.send('after restart')).toBe('after restart');
    await Promise.all(conns.map((c) => c.close()));
    expect(await roundTrip(port, 'after')).toBe('after');
    expect(await gh.stop()).toBe(0);
  });

  test('fault injection is refused outside debug mode', async () => {
    using dir = tempDir();
    await using gh = await Daemon.start(dir.write('gh.yaml', `admin: { listen: "127.0.0.1:0" }\nruntime: { workers: 1 }\n`));
    expect((await gh.admin('/debug/shards/0/crash', { method: 'POST' })).status).toBe(404);
    expect((await gh.admin('/readyz')).status).toBe(200);
    expect(await gh.stop()).toBe(0);
  });
});
