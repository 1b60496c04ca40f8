/**
 * The hub benchmark's baseline: a minimal single-thread `ws` relay speaking the hub wire protocol
 * (docs/hub-protocol.md), without what makes Gatehouse a gateway (no JWT check, no per-user cap, no send
 * queue, no presence, no supervision). It is what a developer would write in an afternoon:
 * one WebSocket server for clients, one WebSocket to the node, JSON in and out.
 *
 * - clients connect to ws://127.0.0.1:PORT/connect?token=ANY&user=UID and get a `welcome`;
 * - client `send` / `request` go to the node as `client-message` / `request` (ids made unique);
 * - node `broadcast` goes to every client, `push` to a user's clients or to one client,
 *   `response` back to the client that asked.
 *
 * usage: node bench/peers/ws-relay.ts PORT NODE_URL
 * prints {"ready":true} once it listens and its node stream is open.
 */
import { WebSocket, WebSocketServer } from 'ws';
import { exitWithParent, intArg, report } from '../lib/child.ts';

const USAGE = 'node bench/peers/ws-relay.ts PORT NODE_URL';
const port = intArg(process.argv[2], 'PORT', USAGE);
const nodeUrl = process.argv[3];
if (!nodeUrl) {
  process.stderr.write(`usage: ${USAGE}\n`);
  process.exit(2);
}
exitWithParent();

interface Client {
  ws: WebSocket;
  id: string;
  userId: string;
}
const clients = new Map<string, Client>();
const byUser = new Map<string, Set<Client>>();
const pending = new Map<string, { client: Client; id: unknown }>();
let seq = 0;
let reqSeq = 0;
let node: WebSocket | undefined;

function connectNode(): void {
  const ws = new WebSocket(nodeUrl!);
  ws.on('open', () => {
    node = ws;
    ws.send(JSON.stringify({ type: 'hello', gateId: 'ws-relay' }));
    report({ ready: true });
  });
  ws.on('message', (raw) => {
    let m: { type?: string; id?: string; userId?: string; clientId?: string; data?: unknown; error?: unknown };
    try {
      m = JSON.parse(raw.toString());
    } catch {
      return;
    }
    if (m.type === 'broadcast') {
      const frame = JSON.stringify({ type: 'message', from: 'n1', data: m.data });
      for (const c of clients.values()) c.ws.send(frame);
    } else if (m.type === 'push') {
      const frame = JSON.stringify({ type: 'message', from: 'n1', data: m.data });
      if (m.userId !== undefined) for (const c of byUser.get(m.userId) ?? []) c.ws.send(frame);
      else if (m.clientId !== undefined) clients.get(m.clientId)?.ws.send(frame);
    } else if (m.type === 'response' && m.id !== undefined) {
      const p = pending.get(m.id);
      if (!p) return;
      pending.delete(m.id);
      p.client.ws.send(JSON.stringify({ type: 'response', id: p.id, data: m.data }));
    }
  });
  ws.on('error', () => {});
  ws.on('close', () => {
    node = undefined;
    setTimeout(connectNode, 100);
  });
}

const wss = new WebSocketServer({ host: '127.0.0.1', port, path: '/connect', maxPayload: 64 * 1024 });
wss.on('listening', connectNode);
wss.on('connection', (ws, req) => {
  const url = new URL(req.url ?? '/', 'http://x');
  const c: Client = { ws, id: `c${++seq}`, userId: url.searchParams.get('user') ?? `anon${seq}` };
  clients.set(c.id, c);
  let set = byUser.get(c.userId);
  if (!set) byUser.set(c.userId, (set = new Set()));
  set.add(c);
  ws.send(JSON.stringify({ type: 'welcome', clientId: c.id, userId: c.userId }));
  ws.on('message', (raw) => {
    let m: { type?: string; id?: unknown; data?: unknown };
    try {
      m = JSON.parse(raw.toString());
    } catch {
      ws.send('{"type":"error","code":"bad_request"}');
      return;
    }
    if (!node) {
      ws.send(JSON.stringify({ type: 'error', id: m.id, code: 'node_unavailable' }));
      return;
    }
    if (m.type === 'send') node.send(JSON.stringify({ type: 'client-message', clientId: c.id, userId: c.userId, data: m.data }));
    else if (m.type === 'request') {
      const gid = `g${++reqSeq}`;
      pending.set(gid, { client: c, id: m.id });
      node.send(JSON.stringify({ type: 'request', id: gid, clientId: c.id, userId: c.userId, data: m.data }));
    } else ws.send('{"type":"error","code":"bad_request"}');
  });
  ws.on('error', () => {});
  ws.on('close', () => {
    clients.delete(c.id);
    set!.delete(c);
    if (set!.size === 0) byUser.delete(c.userId);
    for (const [gid, p] of pending) if (p.client === c) pending.delete(gid);
  });
});
