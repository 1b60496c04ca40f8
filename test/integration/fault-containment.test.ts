/**
 * Fault containment through the daemon (`--debug`): a throw inside one connection's socket
 * handler ends that connection alone. The fault is armed with `POST /debug/actors/:id/crash` and
 * thrown from the connection's next real handler invocation (a read), so the handler guard is
 * what catches it. Checked at workers: 1 (a shard thread) and workers: 0 (the main thread, where
 * an unguarded throw would end the process), for TCP connections and for hub clients.
 */
import { once } from 'node:events';
import { describe, expect, test } from 'vitest';
import { WebSocket } from 'ws';
import { Daemon, metric, tempDir, type LogLine } from '../helpers/daemon.ts';
import { connect, startEchoServer } from '../helpers/net.ts';
import { HubNode } from '../helpers/hub-node.ts';
import { SECRET, tokenFor } from '../hub/harness.ts';

interface TreeNode {
  id: string;
  type: string;
  restarts: number;
  peer?: string;
  children: TreeNode[];
}
const all = (n: TreeNode): TreeNode[] => [n, ...n.children.flatMap(all)];

const yaml = (workers: number, echo: number, node: string) => `admin: { listen: "127.0.0.1:0" }
runtime: { workers: ${workers}, shutdownTimeout: 3s }
log: { level: info }
upstreams: [ { name: app, backends: [ "127.0.0.1:${echo}" ] } ]
listeners:
  - { name: tcp-in, protocol: tcp, listen: "127.0.0.1:0", upstream: app }
  - name: hub
    protocol: hub
    listen: 127.0.0.1:0
    auth: { jwt: { secret: ${SECRET} } }
    nodes: [ { id: n1, url: "${node}" } ]
`;

class Client {
  readonly ws: WebSocket;
  readonly frames: { type: string; id?: string; clientId?: string }[] = [];
  readonly closed: Promise<number>;
  constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('message', (d: Buffer) => this.frames.push(JSON.parse(d.toString()) as { type: string }));
    ws.on('error', () => {});
    this.closed = new Promise((r) => ws.once('close', (code: number) => r(code)));
  }
  static async connect(port: number, user: string): Promise<Client> {
    const c = new Client(new WebSocket(`ws://127.0.0.1:${port}/connect`, { headers: { authorization: `Bearer ${await tokenFor(user)}` } }));
    await once(c.ws, 'open');
    await expect.poll(() => c.frames.some((f) => f.type === 'welcome')).toBe(true);
    return c;
  }
  get clientId(): string {
    return this.frames.find((f) => f.type === 'welcome')!.clientId!;
  }
  async request(id: string): Promise<{ type: string }> {
    this.ws.send(JSON.stringify({ type: 'request', id, data: id }));
    await expect.poll(() => this.frames.some((f) => f.id === id)).toBe(true);
    return this.frames.find((f) => f.id === id)!;
  }
}

async function tree(gh: Daemon): Promise<TreeNode[]> {
  return all(await gh.json<TreeNode>('/actors'));
}

/** Every actor of the shards (shard-N, its supervisor and listeners) has restarts 0, and no restart was logged. */
async function expectNoRestart(gh: Daemon): Promise<void> {
  const nodes = (await tree(gh)).filter((n) => n.type === 'shard' || n.type === 'listener' || n.id.endsWith(':supervisor'));
  expect(nodes.length).toBeGreaterThan(2);
  for (const n of nodes) expect({ id: n.id, restarts: n.restarts }).toEqual({ id: n.id, restarts: 0 });
  expect(gh.logs.filter((l) => l.msg === 'child restarted' || l.msg === 'shard down')).toEqual([]);
}

describe.each([1, 0])('fault containment at workers: %i', (workers) => {
  test('a throw in one TCP connection\'s read handler ends that connection only: counted, logged, gone from /actors; the others echo and nothing restarts', async () => {
    await using echo = await startEchoServer();
    await using node = await HubNode.start();
    using dir = tempDir();
    await using gh = await Daemon.start(dir.write('gh.yaml', yaml(workers, echo.port, node.url)), { debug: true });
    const port = gh.port('tcp-in');
    const conns = await Promise.all(Array.from({ length: 4 }, () => connect(port)));
    for (const [i, c] of conns.entries()) expect(await c.send(`hello ${i}`)).toBe(`hello ${i}`);

    // The victim's actor, found by its peer address (the client socket's local port).
    const victim = conns[1]!;
    const victimId = (await tree(gh)).find((n) => n.type === 'connection' && n.peer === `127.0.0.1:${victim.socket.localPort}`)!.id;
    expect(victimId).toMatch(/^conn:0:\d+$/);
    const res = await gh.admin(`/debug/actors/${encodeURIComponent(victimId)}/crash`, { method: 'POST' });
    expect(res.status).toBe(202);

    // Armed, not thrown yet: the connection still serves until its next handler runs.
    expect((await tree(gh)).some((n) => n.id === victimId)).toBe(true);
    // The client sees its connection end (a FIN: the test's socket allows half-open).
    const ended = Promise.race([once(victim.socket, 'end'), once(victim.socket, 'close')]);
    victim.socket.write('boom');
    await ended;

    for (const [i, c] of conns.entries()) if (c !== victim) expect(await c.send(`still ${i}`)).toBe(`still ${i}`);
    const after = await tree(gh);
    expect(after.some((n) => n.id === victimId)).toBe(false);
    expect(after.filter((n) => n.type === 'connection')).toHaveLength(3);
    await expectNoRestart(gh);
    const m = await (await gh.admin('/metrics')).text();
    expect(metric(m, 'gatehouse_connections_total', { listener: 'tcp-in', outcome: 'error' })).toBe(1);
    expect(metric(m, 'gatehouse_connections_active', { listener: 'tcp-in' })).toBe(3);
    const line = await gh.waitForLog((l) => l.msg === 'connection handler failed: connection closed');
    expect(line).toMatchObject({ level: 50, actorId: victimId, actorType: 'connection', listener: 'tcp-in', remoteAddress: '127.0.0.1', err: { code: 'GH_ERR_INJECTED_FAULT' } });

    await Promise.all(conns.map((c) => c.close()));
    expect(await gh.stop()).toBe(0);
  });

  test('a throw in one hub client\'s handler ends that client only: counted, logged, gone from /actors; the others are served and nothing restarts', async () => {
    await using echo = await startEchoServer();
    await using node = await HubNode.start();
    using dir = tempDir();
    await using gh = await Daemon.start(dir.write('gh.yaml', yaml(workers, echo.port, node.url)), { debug: true });
    await node.waitFor((f) => f.type === 'hello');
    const port = gh.port('hub');
    const clients = await Promise.all(['u1', 'u2', 'u3'].map((u) => Client.connect(port, u)));
    const victim = clients[0]!;
    const victimId = `client:${victim.clientId}`;
    expect((await tree(gh)).some((n) => n.id === victimId)).toBe(true);

    expect((await gh.admin(`/debug/actors/${encodeURIComponent(victimId)}/crash`, { method: 'POST' })).status).toBe(202);
    // The fault is thrown from the client's next WebSocket event (here: the frame it sends, or
    // the pong to the ping the crash sends), where the guard ends it.
    victim.ws.send(JSON.stringify({ type: 'request', id: 'r0', data: 'boom' }));
    expect(await victim.closed).toBe(1006);

    for (const [i, c] of clients.entries()) if (c !== victim) expect(await c.request(`r${i}`)).toMatchObject({ type: 'response' });
    expect((await tree(gh)).some((n) => n.id === victimId)).toBe(false);
    await expectNoRestart(gh);
    const m = await (await gh.admin('/metrics')).text();
    expect(metric(m, 'gatehouse_connections_total', { listener: 'hub', outcome: 'error' })).toBe(1);
    await node.waitFor((f) => f.type === 'client-gone' && f.clientId === victim.clientId);
    const line: LogLine = await gh.waitForLog((l) => l.msg === 'hub client crashed');
    expect(line).toMatchObject({ level: 50, actorId: victimId, actorType: 'client-proxy', userId: 'u1', remoteAddress: '127.0.0.1', err: { code: 'GH_ERR_INJECTED_FAULT' } });

    for (const c of clients) c.ws.close();
    await Promise.all(clients.map((c) => c.closed));
    expect(await gh.stop()).toBe(0);
  });
});

test('an armed fault is also thrown from the end handler: a client that half-closes instead of writing ends the same way', async () => {
  await using echo = await startEchoServer();
  await using node = await HubNode.start();
  using dir = tempDir();
  await using gh = await Daemon.start(dir.write('gh.yaml', yaml(0, echo.port, node.url)), { debug: true });
  const c = await connect(gh.port('tcp-in'));
  expect(await c.send('x')).toBe('x');
  const id = (await tree(gh)).find((n) => n.type === 'connection')!.id;
  expect((await gh.admin(`/debug/actors/${encodeURIComponent(id)}/crash`, { method: 'POST' })).status).toBe(202);
  // The victim half-closes: its 'end' handler throws the fault.
  c.socket.end();
  await once(c.socket, 'close');
  await expect.poll(async () => (await tree(gh)).some((n) => n.id === id)).toBe(false);
  expect(metric(await (await gh.admin('/metrics')).text(), 'gatehouse_connections_total', { listener: 'tcp-in', outcome: 'error' })).toBe(1);
  expect(gh.logs.filter((l) => l.msg === 'connection handler failed: connection closed').map((l) => l.actorId)).toEqual([id]);
  expect(await gh.stop()).toBe(0);
});
