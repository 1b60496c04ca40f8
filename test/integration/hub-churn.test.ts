/**
 * The hub's churn test (issue 4): 5,000 clients of 500 users connect through the daemon
 * (workers: 2, two nodes), message both ways and leave through every kind of exit (clean close,
 * terminate, ping timeout, slow consumer, actor crash) while each node restarts twice. Every
 * request gets an answer; every push a node saw acknowledged as delivered to a live client is at
 * that client; at the end every registry index, presence map, pending-request table and gauge is
 * back to zero.
 */
import { once } from 'node:events';
import { describe, expect, test } from 'vitest';
import { WebSocket } from 'ws';
import { Daemon, metric, tempDir } from '../helpers/daemon.ts';
import { HubNode } from '../helpers/hub-node.ts';
import { SECRET, tokenFor } from '../hub/harness.ts';

const WAVES = 10;
const PER_WAVE = 500;
const PING_MS = 250;
/** What each client of a wave does, by its index: six tenths clean close, two tenths terminate, a tenth each ping timeout and crash, and one slow consumer. */
type Kind = 'close' | 'terminate' | 'ping' | 'slow' | 'crash';
const kindOf = (i: number): Kind => (i === 8 ? 'slow' : i % 10 === 7 ? 'ping' : i % 10 === 9 ? 'crash' : i % 10 >= 5 && i % 10 <= 6 ? 'terminate' : 'close');

interface Frame {
  type: string;
  id?: string;
  clientId?: string;
  data?: { w?: number; i?: number };
}

class Client {
  readonly ws: WebSocket;
  readonly kind: Kind;
  readonly frames: Frame[] = [];
  readonly closed: Promise<number>;
  clientId = '';

  constructor(ws: WebSocket, kind: Kind) {
    this.ws = ws;
    this.kind = kind;
    ws.on('message', (d: Buffer) => {
      // A slow consumer's frames are never read (its socket is paused): nothing to parse.
      this.frames.push(JSON.parse(d.toString()) as Frame);
    });
    ws.on('error', () => {});
    this.closed = new Promise((r) => ws.once('close', (code: number) => r(code)));
  }

  static async connect(port: number, user: string, kind: Kind): Promise<Client> {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/connect`, { headers: { authorization: `Bearer ${await tokenFor(user)}` }, autoPong: kind !== 'ping', perMessageDeflate: false });
    const c = new Client(ws, kind);
    await Promise.race([once(ws, 'open'), c.closed.then((code) => Promise.reject(new Error(`closed (${code}) before open`)))]);
    const w = await until(() => c.frames.find((f) => f.type === 'welcome'), 10_000, 'welcome');
    c.clientId = w!.clientId!;
    return c;
  }

  send(v: unknown): void {
    this.ws.send(JSON.stringify(v));
  }
}

function yaml(n1: string, n2: string): string {
  return `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2, shutdownTimeout: 3s }
log: { level: info }
listeners:
  - name: hub
    protocol: hub
    listen: 127.0.0.1:0
    path: /connect
    auth: { jwt: { secret: ${SECRET} } }
    nodes: [ { id: n1, url: "${n1}" }, { id: n2, url: "${n2}" } ]
    maxConnections: 100000
    maxClientsPerUser: 16
    presenceGrace: 50ms
    requestTimeout: 3s
    pingInterval: ${PING_MS}ms
    sendQueue: { maxMessages: 32, onOverflow: close }
`;
}

interface TreeNode {
  id: string;
  type: string;
  children: TreeNode[];
  [k: string]: unknown;
}
/** Polls `fn` every 10 ms until it returns a truthy value; throws after `ms`. */
async function until<T>(fn: () => Promise<T> | T, ms: number, what: string): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not reached within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** `p`, or a rejection naming `what` after `ms`. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<T>((_, rej) => (timer = setTimeout(() => rej(new Error(`${what}: not within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

const find = (n: TreeNode, pred: (n: TreeNode) => boolean): TreeNode[] => [...(pred(n) ? [n] : []), ...n.children.flatMap((c) => find(c, pred))];

/** Acks a node received since `from` (an index into its `received`), by push id. */
function acks(node: HubNode, from: number): Map<string, number> {
  const out = new Map<string, number>();
  for (let k = from; k < node.received.length; k++) {
    const f = node.received[k]!.frame as { type?: string; id?: string; delivered?: number };
    if (f.type === 'ack' && typeof f.id === 'string') out.set(f.id, f.delivered ?? -1);
  }
  return out;
}

describe('hub churn', () => {
  test('5,000 clients of 500 users through every kind of exit while both nodes restart twice: every answer arrives, every acknowledged push is at its client, every map and gauge back to zero', async () => {
    await using n1 = await HubNode.start();
    await using n2 = await HubNode.start();
    using dir = tempDir();
    await using gh = await Daemon.start(dir.write('gh.yaml', yaml(n1.url, n2.url)), { debug: true });
    await n1.waitFor((f) => f.type === 'hello');
    await n2.waitFor((f) => f.type === 'hello');
    const port = gh.port('hub');
    const nodes = { n1, n2 };
    let slowClosed = 0;
    let acked = 0;

    for (let w = 0; w < WAVES; w++) {
      // Node restarts: n1 goes down during waves 2 and 6, n2 during waves 4 and 8, and each comes
      // back once that wave's clients are connected.
      const down = w === 2 || w === 6 ? n1 : w === 4 || w === 8 ? n2 : undefined;
      if (down) await down.stop();
      const mark = down?.received.length ?? 0;

      const clients: Client[] = [];
      for (let b = 0; b < PER_WAVE; b += 100) {
        clients.push(...(await Promise.all(Array.from({ length: 100 }, (_, k) => Client.connect(port, `u${b + k}`, kindOf(b + k))))));
      }
      if (down) {
        await down.restart();
        await down.waitFor((f) => f.type === 'hello', 15_000, mark);
      }

      // Both ways: a send and a request from every client (sticky node); every request gets an
      // answer: a response, or node_unavailable while its node restarts, never silence.
      for (const [i, c] of clients.entries()) {
        c.send({ type: 'send', data: { w, i } });
        c.send({ type: 'request', id: `r${w}-${i}`, data: { w, i } });
      }
      // (Clients that never answer pings may be gone before their answer: not checked.)
      const answered = (c: Client, i: number) => c.kind === 'ping' || c.frames.some((f) => (f.type === 'response' || f.type === 'error') && f.id === `r${w}-${i}`);
      await until(() => clients.every(answered), 20_000, `wave ${w}: every request answered`);
      const answers = clients.flatMap((c, i) => c.frames.filter((f) => f.id === `r${w}-${i}`));
      for (const a of answers) expect(a.type === 'response' || (a.type === 'error' && (a as { code?: string }).code === 'node_unavailable'), JSON.stringify(a)).toBe(true);

      // Pushes with ack ids to the users whose client stays until it leaves cleanly: every push a
      // node saw acknowledged as delivered is at its client.
      const pusher = n1.sockets.size > 0 ? n1 : n2;
      const from = pusher.received.length;
      const pushed: number[] = [];
      for (const [i, c] of clients.entries()) {
        if (c.kind !== 'close' && c.kind !== 'terminate') continue;
        pusher.push({ userId: `u${i}`, id: `p${w}-${i}`, data: { w, i } });
        pushed.push(i);
      }
      await until(() => acks(pusher, from).size === pushed.length, 20_000, `wave ${w}: every push acknowledged`);
      const got = acks(pusher, from);
      for (const i of pushed) {
        expect(got.get(`p${w}-${i}`), `push p${w}-${i}`).toBe(1);
        await until(() => clients[i]!.frames.some((f) => f.type === 'message' && f.data?.w === w && f.data?.i === i), 10_000, `push p${w}-${i} at its client`);
        acked++;
      }

      // Exits. A slow consumer stops reading and is flooded until the gateway closes it (1013):
      // 10 MiB, more than the kernel's socket buffers (up to 4 MiB to send, ~128 KiB to receive
      // while nothing reads) plus the send queue can hold.
      const slow = clients.filter((c) => c.kind === 'slow');
      for (const c of slow) (c.ws as unknown as { _socket: { pause(): void } })._socket.pause();
      const big = 'x'.repeat(16 * 1024);
      for (const [i, c] of clients.entries()) if (c.kind === 'slow') for (let k = 0; k < 640; k++) pusher.push({ userId: `u${i}`, data: { big } });
      slowClosed += slow.length;
      await until(async () => (metric(await (await gh.admin('/metrics')).text(), 'gatehouse_hub_dropped_total', { reason: 'slow_consumer' }) ?? 0) >= slowClosed, 20_000, `wave ${w}: slow consumers closed`);
      for (const c of slow) c.ws.terminate();

      for (const c of clients) {
        if (c.kind === 'close') c.ws.close();
        else if (c.kind === 'terminate') c.ws.terminate();
        else if (c.kind === 'crash') {
          const res = await gh.admin(`/debug/actors/${encodeURIComponent(`client:${c.clientId}`)}/crash`, { method: 'POST' });
          expect(res.status).toBe(202);
        }
        // 'ping' clients never answer pings: the gateway ends them after two intervals.
      }
      await within(Promise.all(clients.map((c) => c.closed)), 20_000, `wave ${w}: every client closed`);
    }
    expect(acked).toBe(WAVES * Array.from({ length: PER_WAVE }, (_, i) => kindOf(i)).filter((k) => k === 'close' || k === 'terminate').length);

    // Everything back to zero: the shards' registries, presence, pending requests and acks, gauges.
    await until(
      async () => {
        const tree = await gh.json<TreeNode>('/actors');
        const listeners = find(tree, (n) => n.type === 'listener' && n.id.startsWith('listener:hub'));
        const presence = find(tree, (n) => n.type === 'presence');
        const requests = find(tree, (n) => n.id.startsWith('requests:'));
        const clientsLeft = find(tree, (n) => n.type === 'client-proxy').length;
        const view = await gh.json<{ listeners: { clients: number; usersOnline: number; usersInGrace: number; pendingRequests: number; pendingAcks: number }[] }>('/hub');
        const m = await (await gh.admin('/metrics')).text();
        return (
          listeners.length === 2 &&
          listeners.every((l) => Object.values(l.registry as Record<string, number>).every((v) => v === 0) && l.clients === 0) &&
          presence.length === 1 &&
          presence.every((p) => p.clients === 0 && p.users === 0 && p.inGrace === 0 && p.shards === 0) &&
          requests.length === 1 &&
          requests.every((r) => r.pending === 0 && r.byClient === 0 && r.byNode === 0 && r.acks === 0) &&
          clientsLeft === 0 &&
          view.listeners.every((l) => l.clients === 0 && l.usersOnline === 0 && l.usersInGrace === 0 && l.pendingRequests === 0 && l.pendingAcks === 0) &&
          metric(m, 'gatehouse_hub_clients', { listener: 'hub' }) === 0 &&
          metric(m, 'gatehouse_hub_users_online') === 0 &&
          metric(m, 'gatehouse_connections_active', { listener: 'hub' }) === 0
        );
      },
      20_000,
      'every hub map and gauge back to zero',
    );
    // On each node's current stream (a new stream starts a new presence view: the gateway sends
    // the users online at that moment), every user's last presence is offline.
    for (const node of Object.values(nodes)) {
      const last = new Map<string, boolean>();
      for (const r of node.received) if (r.conn === node.accepted && r.frame.type === 'presence') last.set(r.frame.userId as string, r.frame.online as boolean);
      expect([...last].filter(([, online]) => online)).toEqual([]);
    }
    expect(await gh.stop()).toBe(0);
  }, 240_000);
});
