import net from 'node:net';
import { describe, expect, test } from 'vitest';
import { Daemon, metric, tempDir, until } from '../helpers/daemon.ts';
import { startEchoServer } from '../helpers/net.ts';

interface Node {
  id: string;
  type: string;
  peer?: string;
  children: Node[];
}

const config = (backend: number, listener: string) => `
admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2, shutdownTimeout: 5s }
upstreams: [ { name: app, backends: [ "127.0.0.1:${backend}" ] } ]
listeners:
  - ${listener}
`;

interface Probe {
  result: 'open' | 'closed';
  socket: net.Socket;
  close(): Promise<void>;
}

/** Connects (from `localAddress`), sends a byte and tells whether the gateway admitted the connection. */
function probe(port: number, localAddress = '127.0.0.1'): Promise<Probe> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress });
    const close = async (): Promise<void> => {
      if (socket.closed) return;
      socket.destroy();
      await new Promise((r) => socket.once('close', r));
    };
    socket.on('error', () => {});
    socket.once('connect', () => socket.write('x'));
    socket.once('data', () => resolve({ result: 'open', socket, close }));
    socket.once('close', () => resolve({ result: 'closed', socket, close }));
  });
}

const opened = (ps: Probe[]) => ps.filter((p) => p.result === 'open');

/** Client ports of the listener's live connections, per shard, from the actor tree. */
async function peersByShard(gh: Daemon): Promise<Map<number, string[]>> {
  const shards = (await gh.json<Node>('/actors')).children.find((c) => c.id === 'shards')!.children;
  const out = new Map<number, string[]>();
  for (const s of shards) {
    const listener = s.children[0]?.children.find((l) => l.type === 'listener');
    out.set(Number(s.id.slice('shard-'.length)), (listener?.children ?? []).map((c) => c.peer!));
  }
  return out;
}

describe('listener limits across two shards', () => {
  test('rateLimit: a burst of 40 admits exactly burst (10) over both shards, and the rest are counted', async () => {
    await using echo = await startEchoServer();
    using dir = tempDir();
    await using gh = await Daemon.start(
      dir.write('gh.yaml', config(echo.port, '{ name: rl, protocol: tcp, listen: "127.0.0.1:0", upstream: app, rateLimit: { perSecond: 0.001, burst: 10 } }')),
    );
    const probes = await Promise.all(Array.from({ length: 40 }, () => probe(gh.port('rl'))));
    expect(opened(probes)).toHaveLength(10);
    const perShard = await peersByShard(gh);
    expect((perShard.get(0)?.length ?? 0) + (perShard.get(1)?.length ?? 0)).toBe(10);
    const m = await (await gh.admin('/metrics')).text();
    expect(metric(m, 'gatehouse_ratelimit_rejected_total', { listener: 'rl', route: '' })).toBe(30);
    expect(metric(m, 'gatehouse_connections_total', { listener: 'rl', outcome: 'rate_limited' })).toBe(30);
    expect(metric(m, 'gatehouse_connections_active', { listener: 'rl' })).toBe(10);
    // The flood is logged as warnings with counts, not one line per connection.
    expect(gh.logs.filter((l) => l.msg === 'rate limit: new connections rejected').length).toBeLessThanOrEqual(2);
    await Promise.all(probes.map((p) => p.close()));
    expect(await gh.stop()).toBe(0);
  });

  test("maxConnectionsPerIp: exact over both shards, and a crashed shard's places are given back", async () => {
    await using echo = await startEchoServer();
    using dir = tempDir();
    await using gh = await Daemon.start(dir.write('gh.yaml', config(echo.port, '{ name: ip, protocol: tcp, listen: "127.0.0.1:0", upstream: app, maxConnectionsPerIp: 3 }')), {
      debug: true,
    });
    const port = gh.port('ip');
    const probes = await Promise.all(Array.from({ length: 12 }, () => probe(port)));
    const admitted = opened(probes);
    expect(admitted).toHaveLength(3);
    // Another client IP has its own 3.
    const others = await Promise.all(Array.from({ length: 5 }, () => probe(port, '127.0.0.2')));
    expect(opened(others)).toHaveLength(3);
    const m = await (await gh.admin('/metrics')).text();
    expect(metric(m, 'gatehouse_connections_total', { listener: 'ip', outcome: 'over_limit' })).toBe(11);

    // Crash a shard that holds places of 127.0.0.1: the control plane gives them back.
    const perShard = await peersByShard(gh);
    const mine = (s: number) => (perShard.get(s) ?? []).filter((p) => p.startsWith('127.0.0.1:'));
    const victim = mine(0).length > 0 ? 0 : 1;
    const survivors = 3 - mine(victim).length;
    expect((await gh.admin(`/debug/shards/${victim}/crash`, { method: 'POST' })).status).toBe(202);
    await gh.waitForLog((l) => l.msg === 'shard down' && l.shard === victim);
    await expect.poll(() => admitted.filter((p) => p.socket.destroyed || p.socket.readableEnded).length, { timeout: 10_000 }).toBe(3 - survivors);
    await until(async () => (await gh.admin('/readyz')).status === 200, 10_000, 'the shard back');
    const again = await Promise.all(Array.from({ length: 6 }, () => probe(port)));
    expect(opened(again)).toHaveLength(3 - survivors);

    // Everything closed: every place is free again, on both shards.
    await Promise.all([...probes, ...others, ...again].map((p) => p.close()));
    await until(async () => metric(await (await gh.admin('/metrics')).text(), 'gatehouse_connections_active', { listener: 'ip' }) === 0, 10_000, 'no connection left');
    const last = await Promise.all(Array.from({ length: 4 }, () => probe(port)));
    expect(opened(last)).toHaveLength(3);
    await Promise.all(last.map((p) => p.close()));
    expect(await gh.stop()).toBe(0);
  });
});
