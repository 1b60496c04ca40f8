/**
 * The hub through the daemon at workers: 2 (a child process, two shard threads): presence across
 * shards, a broadcast acknowledged with every live client counted, and a shard crash: its clients
 * are gone (client-gone to the node, presence offline once no other shard holds the user), the
 * other shard's clients are untouched, and the restarted shard serves new clients.
 */
import { once } from 'node:events';
import { describe, expect, test } from 'vitest';
import { WebSocket } from 'ws';
import { Daemon, metric, tempDir } from '../helpers/daemon.ts';
import { HubNode } from '../helpers/hub-node.ts';
import { SECRET, tokenFor } from '../hub/harness.ts';

interface Frame {
  type: string;
  id?: string;
  clientId?: string;
  data?: unknown;
  code?: string;
}

class Client {
  readonly ws: WebSocket;
  readonly frames: Frame[] = [];
  readonly closed: Promise<number>;
  clientId = '';
  constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('message', (d: Buffer) => this.frames.push(JSON.parse(d.toString()) as Frame));
    ws.on('error', () => {});
    this.closed = new Promise((r) => ws.once('close', (code: number) => r(code)));
  }
  get shard(): number {
    return Number(this.clientId.split('.')[0]);
  }
  static async connect(port: number, user: string): Promise<Client> {
    const c = new Client(new WebSocket(`ws://127.0.0.1:${port}/connect`, { headers: { authorization: `Bearer ${await tokenFor(user)}` } }));
    await Promise.race([once(c.ws, 'open'), c.closed.then((code) => Promise.reject(new Error(`closed ${code} before open`)))]);
    c.clientId = (await until(() => c.frames.find((f) => f.type === 'welcome'), 5_000, 'welcome')).clientId!;
    return c;
  }
  async request(id: string): Promise<Frame> {
    this.ws.send(JSON.stringify({ type: 'request', id, data: id }));
    return until(() => this.frames.find((f) => f.id === id), 5_000, `answer to ${id}`);
  }
}

interface TreeNode {
  id: string;
  restarts: number;
  children: TreeNode[];
  [k: string]: unknown;
}
const find = (n: TreeNode, pred: (n: TreeNode) => boolean): TreeNode[] => [...(pred(n) ? [n] : []), ...n.children.flatMap((c) => find(c, pred))];

/** Polls every 10 ms until `fn` gives a truthy value; throws after `ms`. */
async function until<T>(fn: () => Promise<T | undefined | false> | T | undefined | false, ms: number, what: string): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not reached within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const yaml = (node: string) => `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2, shutdownTimeout: 3s }
log: { level: info }
listeners:
  - name: hub
    protocol: hub
    listen: 127.0.0.1:0
    auth: { jwt: { secret: ${SECRET} } }
    nodes: [ { id: n1, url: "${node}" } ]
    presenceGrace: 100ms
    requestTimeout: 3s
`;

describe('hub at workers: 2', () => {
  test('presence across shards, broadcast acks, a presence crash (shards re-announce), and a shard crash: its clients are gone and cleaned, the other shard\'s keep working, the restarted shard serves', async () => {
    await using node = await HubNode.start();
    using dir = tempDir();
    await using gh = await Daemon.start(dir.write('gh.yaml', yaml(node.url)), { debug: true });
    await node.waitFor((f) => f.type === 'hello');
    const port = gh.port('hub');
    const clients: Client[] = [];

    // User `both` with one client on each shard (the kernel picks the shard: connect until it has).
    const both: Client[] = [];
    for (let k = 0; k < 40 && new Set(both.map((c) => c.shard)).size < 2; k++) {
      const c = await Client.connect(port, 'both');
      if (both.some((x) => x.shard === c.shard)) {
        c.ws.close();
        await c.closed;
      } else both.push(c);
    }
    expect(new Set(both.map((c) => c.shard))).toEqual(new Set([0, 1]));
    for (let i = 0; i < 10; i++) clients.push(await Client.connect(port, `u${i}`));
    const live = () => [...both, ...clients].filter((c) => c.ws.readyState === WebSocket.OPEN);
    await node.waitFor((f) => f.type === 'presence' && f.userId === 'both' && f.online === true);

    // A broadcast reaches every client on both shards, and the node hears how many.
    node.broadcast('all', 'b1');
    expect(await node.waitFor((f) => f.type === 'ack' && f.id === 'b1')).toEqual({ type: 'ack', id: 'b1', delivered: 12 });
    for (const c of live()) await until(() => c.frames.some((f) => f.type === 'message' && f.data === 'all'), 5_000, 'broadcast at a client');

    // The presence actor crashes (fault injection): it is restarted, both shards re-announce
    // their clients, and no user goes offline.
    expect((await gh.admin(`/debug/actors/${encodeURIComponent('presence:hub')}/crash`, { method: 'POST' })).status).toBe(202);
    await until(
      async () => {
        const tree = await gh.json<TreeNode>('/actors');
        const p = find(tree, (n) => n.id === 'presence:hub')[0];
        return p !== undefined && p.restarts === 1 && p.clients === 12 && p.users === 11;
      },
      5_000,
      'presence restarted and whole again',
    );
    expect(node.frames('presence').filter((f) => f.online === false)).toEqual([]);

    // `both` leaves shard 0: still online (its shard-1 client), and the node hears client-gone only.
    const [on0, on1] = [both.find((c) => c.shard === 0)!, both.find((c) => c.shard === 1)!];
    on0.ws.close();
    await on0.closed;
    await node.waitFor((f) => f.type === 'client-gone' && f.clientId === on0.clientId);
    expect(await on1.request('still-here')).toMatchObject({ type: 'response', id: 'still-here' });
    expect(node.frames('presence').filter((f) => f.userId === 'both' && f.online === false)).toEqual([]);

    // Shard 1 crashes: its clients are cut, the node hears client-gone for each and `both` goes
    // offline after the grace; shard 0's clients keep working.
    const survivors = clients.filter((c) => c.shard === 0);
    const victims = [on1, ...clients.filter((c) => c.shard === 1)];
    expect((await gh.admin('/debug/shards/1/crash', { method: 'POST' })).status).toBe(202);
    await Promise.all(victims.map((c) => c.closed));
    for (const c of victims) await node.waitFor((f) => f.type === 'client-gone' && f.clientId === c.clientId);
    await node.waitFor((f) => f.type === 'presence' && f.userId === 'both' && f.online === false);
    for (const [i, c] of survivors.entries()) expect(await c.request(`after-crash-${i}`)).toMatchObject({ type: 'response' });
    await until(async () => (await gh.admin('/readyz')).status === 200, 10_000, 'shard 1 back');
    await until(async () => metric(await (await gh.admin('/metrics')).text(), 'gatehouse_hub_clients', { listener: 'hub' }) === survivors.length, 5_000, 'hub_clients counts the survivors');

    // The restarted shard serves new clients (connect until one lands there).
    let fresh: Client | undefined;
    for (let k = 0; k < 40 && fresh?.shard !== 1; k++) {
      if (fresh) {
        fresh.ws.close();
        await fresh.closed;
      }
      fresh = await Client.connect(port, 'fresh');
    }
    expect(fresh!.shard).toBe(1);
    expect(await fresh!.request('new-shard')).toMatchObject({ type: 'response', id: 'new-shard' });

    // Everyone leaves: every gauge and map back to zero.
    for (const c of [...survivors, fresh!]) c.ws.close();
    await Promise.all([...survivors, fresh!].map((c) => c.closed));
    await until(
      async () => {
        const m = await (await gh.admin('/metrics')).text();
        const view = await gh.json<{ listeners: { clients: number; usersOnline: number; pendingRequests: number }[] }>('/hub');
        return (
          metric(m, 'gatehouse_hub_clients', { listener: 'hub' }) === 0 &&
          metric(m, 'gatehouse_hub_users_online') === 0 &&
          metric(m, 'gatehouse_connections_active', { listener: 'hub' }) === 0 &&
          view.listeners.every((l) => l.clients === 0 && l.usersOnline === 0 && l.pendingRequests === 0)
        );
      },
      10_000,
      'hub gauges back to zero',
    );
    expect(await gh.stop()).toBe(0);
  }, 60_000);
});
