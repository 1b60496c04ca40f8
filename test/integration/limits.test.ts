import net from 'node:net';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { describe, expect, test } from 'vitest';
import { WebSocket } from 'ws';
import { Daemon, metric, tempDir, until, type LogLine } from '../helpers/daemon.ts';
import { startEchoServer } from '../helpers/net.ts';
import { HubNode } from '../helpers/hub-node.ts';
import { SECRET, tokenFor } from '../hub/harness.ts';

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

/** The keys of a JSON log line's top-level object, in order, duplicates kept (JSON.parse would keep only the last). */
function topLevelKeys(line: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (ch === '"') {
      let j = i + 1;
      while (line[j] !== '"') j += line[j] === '\\' ? 2 : 1;
      if (depth === 1 && line[j + 1] === ':') keys.push(line.slice(i + 1, j));
      i = j;
    } else if (ch === '{' || ch === '[') depth++;
    else if (ch === '}' || ch === ']') depth--;
  }
  return keys;
}

/** Opens a hub WebSocket; resolves with the HTTP status of a refused upgrade, or the open socket. */
function hubConnect(port: number, token: string): Promise<{ status: number; ws?: WebSocket }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/connect`, { headers: { authorization: `Bearer ${token}` } });
    ws.on('error', () => {});
    ws.once('unexpected-response', (_req, res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0 });
      ws.terminate();
    });
    ws.once('open', () => resolve({ status: 101, ws }));
  });
}

describe('refusal logs', () => {
  test('every refusal kind names the client (remoteAddress, and userId where known); hub lines carry no key twice', async () => {
    await using echo = await startEchoServer();
    await using node = await HubNode.start();
    using dir = tempDir();
    await using gh = await Daemon.start(
      dir.write(
        'gh.yaml',
        `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 1, shutdownTimeout: 3s }
log: { level: info }
upstreams: [ { name: app, backends: [ "127.0.0.1:${echo.port}" ] } ]
listeners:
  - { name: capped, protocol: tcp, listen: "127.0.0.1:0", upstream: app, maxConnections: 1 }
  - { name: perip, protocol: tcp, listen: "127.0.0.1:0", upstream: app, maxConnectionsPerIp: 1 }
  - { name: rl, protocol: tcp, listen: "127.0.0.1:0", upstream: app, rateLimit: { perSecond: 0.001, burst: 1 } }
  - name: hub
    protocol: hub
    listen: 127.0.0.1:0
    auth: { jwt: { secret: ${SECRET} } }
    nodes: [ { id: n1, url: "${node.url}" } ]
    maxClientsPerUser: 1
    clientRateLimit: { perSecond: 1, burst: 1 }
`,
      ),
    );
    const raw: string[] = [];
    createInterface({ input: gh.child.stdout! }).on('line', (l) => raw.push(l));
    const refusal = (msg: string): Promise<LogLine> => gh.waitForLog((l) => l.msg === msg);

    // TCP listener limits: the second connection of each is refused.
    for (const [name, msg, kind] of [
      ['capped', 'maxConnections reached: connection refused', 'over_limit'],
      ['perip', 'maxConnectionsPerIp reached: connection refused', 'per_ip'],
      ['rl', 'rate limit: new connections rejected', 'rate_limited'],
    ] as const) {
      const first = await probe(gh.port(name), '127.0.0.3');
      expect(first.result).toBe('open');
      expect((await probe(gh.port(name), '127.0.0.3')).result).toBe('closed');
      expect(await refusal(msg)).toMatchObject({ level: 40, listener: name, actorId: `listener:${name}`, kind, remoteAddress: '127.0.0.3', refused: 1 });
      await first.close();
    }

    // Hub: a bad token, a second client of a capped user, and a client flooding past its rate limit.
    const hub = gh.port('hub');
    expect((await hubConnect(hub, 'not-a-token')).status).toBe(401);
    expect(await refusal('hub client refused: bad or missing token')).toMatchObject({ level: 30, listener: 'hub', remoteAddress: '127.0.0.1', reason: 'malformed' });
    const dup = await hubConnect(hub, await tokenFor('dup'));
    expect(dup.status).toBe(101);
    expect((await hubConnect(hub, await tokenFor('dup'))).status).toBe(429);
    expect(await refusal('maxClientsPerUser reached: hub client refused')).toMatchObject({ listener: 'hub', remoteAddress: '127.0.0.1', userId: 'dup' });
    const flooder = await hubConnect(hub, await tokenFor('flooder'));
    const closed = once(flooder.ws!, 'close');
    for (let i = 0; i < 20; i++) flooder.ws!.send(JSON.stringify({ type: 'send', data: i }));
    expect((await closed)[0]).toBe(1008);
    expect(await refusal('hub client kept flooding past its rate limit: closed (1008)')).toMatchObject({ level: 40, actorType: 'client-proxy', userId: 'flooder', remoteAddress: '127.0.0.1' });
    dup.ws!.close();
    await once(dup.ws!, 'close');

    // The raw lines of the hub session: no key twice in any of them (JSON.parse would hide it).
    const hubLines = raw.filter((l) => l.includes('"listener":"hub"'));
    expect(hubLines.some((l) => l.includes('"actorType":"client-proxy"'))).toBe(true);
    for (const line of hubLines) {
      const keys = topLevelKeys(line);
      expect(keys.filter((k, i) => keys.indexOf(k) !== i), line).toEqual([]);
    }
    expect(await gh.stop()).toBe(0);
  });
});
