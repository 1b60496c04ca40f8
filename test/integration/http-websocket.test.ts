/**
 * WebSocket pass-through on an HTTP listener, on the real daemon at workers: 2, with the `ws`
 * package on both ends (and raw sockets where exact bytes matter): a route with
 * `websocket: true` tunnels text and binary messages both ways and forwards the close handshake
 * from either side; bytes sent early (with the upgrade request, or with the 101) and a half-close
 * cross the tunnel; a silent tunnel ends at the listener's idleTimeout; an Upgrade on a route
 * without `websocket` gets 403 upgrade_not_allowed and never reaches a backend, and a backend's
 * refusal is relayed as it is; a tunnel lives through a reload that changes other routes and
 * another listener; it counts in gatehouse_connections_active and holds its pooled upstream
 * socket while open, and everything is back to zero once it is closed.
 */
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, onTestFinished, test } from 'vitest';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { Daemon, metric, tempDir, until } from '../helpers/daemon.ts';
import { findNodes, type ActorNode } from '../helpers/upstreams.ts';

/** A message as `ws` reports it: the bytes and whether the frame was binary. */
interface Msg {
  data: Buffer;
  binary: boolean;
}

/** Queues every message and the close of one WebSocket (client or server side), to await them in order. */
class Peer {
  readonly ws: WebSocket;
  readonly #msgs: Msg[] = [];
  #wake: (() => void) | undefined;
  readonly closed: Promise<{ code: number; reason: string }>;
  constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('error', () => {});
    ws.on('message', (data: RawData, binary: boolean) => {
      this.#msgs.push({ data: Buffer.isBuffer(data) ? data : Buffer.concat(data as Buffer[]), binary });
      this.#wake?.();
    });
    this.closed = new Promise((resolve) => ws.once('close', (code: number, reason: Buffer) => resolve({ code, reason: reason.toString() })));
    void this.closed.then(() => this.#wake?.());
  }
  /** The next message; rejects if the socket closes first or nothing comes within 10 s. */
  async next(): Promise<Msg> {
    const deadline = Date.now() + 10_000;
    while (this.#msgs.length === 0) {
      if (this.ws.readyState === WebSocket.CLOSED) throw new Error('closed before the next message');
      if (Date.now() > deadline) throw new Error('no message within 10 s');
      await new Promise<void>((r) => {
        this.#wake = r;
        setTimeout(r, 100).unref();
      });
    }
    return this.#msgs.shift()!;
  }
}

/** Connects a client through the gateway; resolves once open (or rejects with the status it got). Terminated when the test ends. */
async function open(url: string): Promise<Peer> {
  const ws = new WebSocket(url);
  onTestFinished(() => ws.terminate());
  const p = new Peer(ws);
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (req, res) => {
      // With this listener, ws leaves the connection to us: read the answer, then close it.
      const socket = req.socket;
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => {
        socket?.destroy();
        reject(new Error(`upgrade answered ${res.statusCode} ${body}`));
      });
    });
    ws.once('error', reject);
  });
  return p;
}

/** Sends one message and checks it arrives as sent, bytes and frame type. */
async function roundTrip(from: Peer, to: Peer, data: string | Buffer): Promise<void> {
  from.ws.send(data);
  const m = await to.next();
  expect(m.binary).toBe(typeof data !== 'string');
  expect(m.data.equals(Buffer.from(data))).toBe(true);
}

/** A raw client socket: what it read so far, and waits on it. Destroyed when the test ends. */
class Raw {
  readonly socket: net.Socket;
  text = '';
  ended = false;
  closed = false;
  #wake: (() => void) | undefined;
  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('error', () => {});
    socket.on('data', (d: Buffer) => {
      this.text += d.toString('latin1');
      this.#wake?.();
    });
    socket.on('end', () => {
      this.ended = true;
      this.#wake?.();
    });
    socket.on('close', () => {
      this.closed = true;
      this.#wake?.();
    });
  }
  static async open(port: number): Promise<Raw> {
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    onTestFinished(() => {
      s.destroy();
    });
    await once(s, 'connect');
    return new Raw(s);
  }
  /** Resolves once `pred` holds (checked on every event), or rejects after `ms`. */
  async until(pred: () => boolean, ms: number, what: string): Promise<void> {
    const deadline = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms (read ${JSON.stringify(this.text.slice(0, 300))}, ended ${this.ended}, closed ${this.closed})`);
      await new Promise<void>((r) => {
        this.#wake = r;
        setTimeout(r, 100).unref();
      });
    }
  }
  /** A whole response with Content-Length at the start of what was read: taken off, parsed. */
  async response(ms = 10_000): Promise<{ status: number; headers: Record<string, string>; body: string }> {
    let r: ReturnType<typeof parseResponse>;
    await this.until(() => (r = parseResponse(this.text)) !== undefined, ms, 'a whole response');
    this.text = this.text.slice(r!.length);
    return r!;
  }
}

function parseResponse(text: string): { status: number; headers: Record<string, string>; body: string; length: number } | undefined {
  const i = text.indexOf('\r\n\r\n');
  if (i < 0) return undefined;
  const lines = text.slice(0, i).split('\r\n');
  const headers: Record<string, string> = {};
  for (const l of lines.slice(1)) headers[l.slice(0, l.indexOf(':')).toLowerCase()] = l.slice(l.indexOf(':') + 1).trim();
  const len = Number(headers['content-length'] ?? 0);
  if (text.length < i + 4 + len) return undefined;
  return { status: Number(lines[0]!.slice(9, 12)), headers, body: text.slice(i + 4, i + 4 + len), length: i + 4 + len };
}

/** `GET path` on a fresh connection with `Connection: close`: the status and body (no connection left open). */
async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  const c = await Raw.open(port);
  c.socket.write(`GET ${path} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n`);
  const r = await c.response();
  await c.until(() => c.closed || c.ended, 10_000, 'closed after Connection: close');
  c.socket.destroy();
  return { status: r.status, body: r.body };
}

const UPGRADE = 'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n';

/** The 101 the raw backend answers with, and the bytes it sends in the same write. */
const RAW_101 = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n';
const SERVER_FIRST = 'server-first|';

/** The listener `brief`'s idleTimeout: a tunnel silent that long is closed. */
const BRIEF_IDLE_MS = 600;

describe('WebSocket pass-through on an http listener (workers: 2)', () => {
  let gh: Daemon;
  let dir: ReturnType<typeof tempDir>;
  let file: string;
  /** The WebSocket backend: an http server whose upgrades a ws server takes (`/ws/deny*` is refused with 401). */
  let chat: http.Server;
  let wss: WebSocketServer;
  /** Server-side peers, in connection order, with the request each came with. */
  const accepted: { peer: Peer; req: http.IncomingMessage }[] = [];
  let acceptedWake: (() => void) | undefined;
  /** A raw backend for exact tunnel bytes: answers 101 plus SERVER_FIRST in one write, then echoes. */
  let raw: net.Server;
  const rawSeen: { head: string; after: string; ended: boolean }[] = [];
  /** The backend of the route without `websocket`: it counts whatever reaches it. */
  let plain: http.Server;
  const plainSeen = { connections: 0, requests: 0, upgrades: 0 };

  const port = (s: net.Server): number => (s.address() as net.AddressInfo).port;
  const config = (extra: { route?: string; otherHeader?: string } = {}): string => `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2, shutdownTimeout: 2s }
upstreams:
  - { name: chat, backends: [ "127.0.0.1:${port(chat)}" ], healthCheck: { enabled: false } }
  - { name: raw, backends: [ "127.0.0.1:${port(raw)}" ], healthCheck: { enabled: false } }
  - { name: plain, backends: [ "127.0.0.1:${port(plain)}" ], healthCheck: { enabled: false } }
listeners:
  - name: web
    protocol: http
    listen: 127.0.0.1:0
    idleTimeout: 30s
    routes:
      - { name: ws, match: { pathPrefix: /ws }, upstream: chat, websocket: true }
      - { name: raw, match: { pathPrefix: /raw }, upstream: raw, websocket: true }
      - { name: plain, match: { pathPrefix: /plain }, upstream: plain }
${extra.route ?? ''}
  - name: other
    protocol: http
    listen: 127.0.0.1:0
    routes:
      - { name: other, upstream: plain${extra.otherHeader ? `, headers: { request: { set: { x-gen: "${extra.otherHeader}" } } }` : ''} }
  - name: brief
    protocol: http
    listen: 127.0.0.1:0
    idleTimeout: ${BRIEF_IDLE_MS}ms
    routes: [ { name: brief, upstream: chat, websocket: true } ]
`;

  beforeAll(async () => {
    chat = http.createServer((req, res) => res.end(`chat ${req.url}`));
    wss = new WebSocketServer({ noServer: true });
    chat.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      if (req.url?.startsWith('/ws/deny')) {
        socket.end('HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nContent-Length: 6\r\nConnection: close\r\n\r\ndenied');
        return;
      }
      wss.handleUpgrade(req, socket, head, (ws) => {
        accepted.push({ peer: new Peer(ws), req });
        acceptedWake?.();
      });
    });
    raw = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => {});
      const seen = { head: '', after: '', ended: false };
      rawSeen.push(seen);
      let buf = '';
      let upgraded = false;
      s.on('data', (d: Buffer) => {
        if (upgraded) {
          seen.after += d.toString('latin1');
          s.write(d); // echo
          return;
        }
        buf += d.toString('latin1');
        const i = buf.indexOf('\r\n\r\n');
        if (i < 0) return;
        upgraded = true;
        seen.head = buf.slice(0, i);
        seen.after = buf.slice(i + 4);
        s.write(RAW_101 + SERVER_FIRST + seen.after); // and the echo of what came with the head
      });
      // Half-close: the client's FIN comes through; the backend answers and ends its side.
      s.on('end', () => {
        seen.ended = true;
        s.end('bye from raw');
      });
    });
    plain = http.createServer((req, res) => {
      plainSeen.requests++;
      res.end(`plain ${req.url} ${req.headers['x-gen'] ?? ''}`);
    });
    plain.on('connection', () => plainSeen.connections++);
    plain.on('upgrade', (_req, socket: net.Socket) => {
      plainSeen.upgrades++;
      socket.destroy();
    });
    for (const s of [chat, raw, plain]) {
      s.listen(0, '127.0.0.1');
      await once(s, 'listening');
    }
    dir = tempDir();
    file = dir.write('gh.yaml', config());
    gh = await Daemon.start(file);
  });

  afterAll(async () => {
    await gh?.[Symbol.asyncDispose]();
    for (const c of wss?.clients ?? []) c.terminate();
    for (const { peer } of accepted) peer.ws.terminate();
    wss?.close();
    for (const s of [chat, plain]) {
      if (!s) continue;
      s.closeAllConnections();
      s.close();
      await once(s, 'close');
    }
    if (raw) {
      raw.close();
      await once(raw, 'close');
    }
    dir?.[Symbol.dispose]();
  });

  /** The server side of the `n`-th WebSocket the chat backend accepted (counting from 1). */
  async function serverPeer(n: number): Promise<{ peer: Peer; req: http.IncomingMessage }> {
    await until(
      () =>
        accepted.length >= n ||
        new Promise<boolean>((r) => {
          acceptedWake = () => r(accepted.length >= n);
          setTimeout(() => r(false), 100).unref();
        }),
      10_000,
      `backend connection ${n}`,
    );
    return accepted[n - 1]!;
  }

  async function tree(): Promise<ActorNode> {
    return gh.json<ActorNode>('/actors');
  }

  /** Pooled sockets busy toward `chat`, summed over the shards. */
  async function chatBusy(): Promise<number> {
    // Every http listener of a shard lists the shard's pools: read them from `web` only.
    const nodes = findNodes(await tree(), (n) => n.type === 'listener' && n.id === 'listener:web').map((x) => x.node);
    expect(nodes).toHaveLength(2);
    return nodes.reduce((n, l) => n + ((l.pools as Record<string, { busy: number }>)[`chat/127.0.0.1:${port(chat)}`]?.busy ?? 0), 0);
  }

  async function metricsText(): Promise<string> {
    return (await gh.admin('/metrics')).text();
  }

  async function active(listener: string): Promise<number | undefined> {
    return metric(await metricsText(), 'gatehouse_connections_active', { listener });
  }

  /** Nothing left: state table, gauges, http-connection actors, busy pooled sockets. */
  async function expectIdle(): Promise<void> {
    expect(await gh.idleLeftovers()).toEqual([]);
    const text = (await until(
      async () => {
        const t = await metricsText();
        return (metric(t, 'gatehouse_actors', { type: 'http-connection' }) ?? 0) === 0 ? t : undefined;
      },
      5_000,
      'no http-connection actor left',
    ))!;
    for (const l of ['web', 'other', 'brief']) expect(metric(text, 'gatehouse_connections_active', { listener: l })).toBe(0);
    expect(findNodes(await tree(), (n) => n.type === 'http-connection')).toEqual([]);
    await until(async () => (await chatBusy()) === 0, 5_000, 'no pooled socket to chat busy');
  }

  test('text and binary messages both ways; the client\'s close handshake reaches the backend and its answer comes back', async () => {
    const n = accepted.length + 1;
    const client = await open(`ws://127.0.0.1:${gh.port('web')}/ws/room?x=1`);
    const { peer: server, req } = await serverPeer(n);
    // The backend got the upgrade as the client sent it, with the gateway's forwarded headers.
    expect(req.url).toBe('/ws/room?x=1');
    expect(req.headers.upgrade?.toLowerCase()).toBe('websocket');
    expect(req.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(req.headers['x-request-id']).toMatch(/^\S+$/);

    await roundTrip(client, server, 'hello from the client');
    await roundTrip(server, client, 'hello from the backend');
    await roundTrip(client, server, Buffer.from([0, 1, 2, 255, 254, 0]));
    await roundTrip(server, client, Buffer.from([9, 8, 7, 0]));
    // Messages larger than a socket read, and an empty one, each way.
    const big = randomBytes(3 * 1024 * 1024 + 5);
    await roundTrip(client, server, big);
    await roundTrip(server, client, big);
    await roundTrip(client, server, 'é'.repeat(200_000));
    await roundTrip(server, client, '');
    // Many messages in a row keep their order.
    for (let i = 0; i < 200; i++) client.ws.send(`c${i}`);
    for (let i = 0; i < 200; i++) expect((await server.next()).data.toString()).toBe(`c${i}`);

    // While open, the tunnel is a live connection of `web`, in state `upgraded`, holding one pooled socket.
    expect(await active('web')).toBe(1);
    const conns = findNodes(await tree(), (x) => x.type === 'http-connection').map((x) => x.node);
    expect(conns.map((c) => c.state)).toEqual(['upgraded']);
    expect(await chatBusy()).toBe(1);

    // The client closes: the backend sees its code and reason, and its own Close frame comes back.
    client.ws.close(4001, 'client bye');
    expect(await server.closed).toEqual({ code: 4001, reason: 'client bye' });
    expect(await client.closed).toEqual({ code: 4001, reason: 'client bye' });
    await expectIdle();
  });

  // BUG: as above (exchange.ts, End before Paused after a 101).
  test('the backend\'s close handshake reaches the client and its answer goes back', async () => {
    const n = accepted.length + 1;
    const client = await open(`ws://127.0.0.1:${gh.port('web')}/ws/other`);
    const { peer: server } = await serverPeer(n);
    await roundTrip(client, server, 'ping');
    server.ws.close(4002, 'server bye');
    expect(await client.closed).toEqual({ code: 4002, reason: 'server bye' });
    expect(await server.closed).toEqual({ code: 4002, reason: 'server bye' });
    await expectIdle();
  });

  // BUG: as above (exchange.ts, End before Paused after a 101).
  test('bytes sent with the upgrade request and with the 101 cross the tunnel, and a half-close goes through both ways', async () => {
    const c = await Raw.open(gh.port('web'));
    const seen = rawSeen.length;
    // The client does not wait for the 101: its first tunnel bytes go in the same write.
    c.socket.write(`GET /raw/t HTTP/1.1\r\nHost: gw.test\r\n${UPGRADE}\r\nclient-early|`);
    await c.until(() => c.text.includes(SERVER_FIRST), 5_000, 'the 101 and the backend\'s first bytes');
    const [head, rest] = c.text.split('\r\n\r\n') as [string, string];
    expect(head).toMatch(/^HTTP\/1\.1 101 /);
    expect(head).toMatch(/\r\nupgrade: websocket/i);
    expect(head).toMatch(/\r\nconnection: upgrade/i);
    // The backend's bytes after its 101, then the echo of the client's early bytes: the gateway
    // held them until the backend switched protocols, then passed them on.
    await c.until(() => c.text.endsWith(`${SERVER_FIRST}client-early|`), 5_000, 'the early bytes echoed');
    expect(rest.startsWith(SERVER_FIRST)).toBe(true);
    expect(rawSeen).toHaveLength(seen + 1);
    expect(rawSeen[seen]!.head).toMatch(/^GET \/raw\/t HTTP\/1\.1\r\n/);
    expect(rawSeen[seen]!.after).toBe('client-early|');
    c.text = '';
    c.socket.write('more bytes');
    await c.until(() => c.text === 'more bytes', 10_000, 'the echo');
    // The client half-closes: the backend sees the end, answers, and ends too.
    c.socket.end();
    await c.until(() => c.ended, 10_000, 'the backend\'s end');
    expect(c.text).toBe('more bytesbye from raw');
    expect(rawSeen[seen]!.ended).toBe(true);
    await c.until(() => c.closed, 10_000, 'closed');
    await expectIdle();
  });

  // BUG: as above (exchange.ts, End before Paused after a 101).
  test('a tunnel silent for the listener\'s idleTimeout is closed, on both sides', async () => {
    const n = accepted.length + 1;
    const client = await open(`ws://127.0.0.1:${gh.port('brief')}/chat`);
    const { peer: server } = await serverPeer(n);
    await roundTrip(client, server, 'one');
    await roundTrip(server, client, 'two');
    const quietSince = Date.now();
    // Nothing more is sent: the gateway closes the tunnel (no Close frame: 1006 on both sides).
    expect((await client.closed).code).toBe(1006);
    expect((await server.closed).code).toBe(1006);
    expect(Date.now() - quietSince).toBeGreaterThanOrEqual(BRIEF_IDLE_MS - 50);
    await expectIdle();
  });

  test('an Upgrade on a route without websocket: 403 upgrade_not_allowed, and the backend never sees it', async () => {
    const before = { ...plainSeen };
    // Exact bytes on a raw socket.
    const c = await Raw.open(gh.port('web'));
    c.socket.write(`GET /plain/chat HTTP/1.1\r\nHost: gw.test\r\n${UPGRADE}\r\n`);
    const r = await c.response();
    c.socket.destroy();
    expect(r.status).toBe(403);
    expect(r.headers['content-type']).toBe('application/json');
    expect(r.headers.upgrade).toBeUndefined();
    expect(JSON.parse(r.body)).toEqual({ error: 'upgrade_not_allowed', requestId: r.headers['x-request-id'] });
    // And with a real client: the handshake fails with that status.
    await expect(open(`ws://127.0.0.1:${gh.port('web')}/plain/chat`)).rejects.toThrow(/^upgrade answered 403 \{"error":"upgrade_not_allowed"/);
    // Nothing reached the backend: no connection, no request, no upgrade.
    expect(plainSeen).toEqual(before);
    // The route itself serves plain requests (so the counts above could move).
    expect(await get(gh.port('web'), '/plain/x')).toEqual({ status: 200, body: 'plain /plain/x ' });
    expect(plainSeen.requests).toBe(before.requests + 1);
    expect(metric(await metricsText(), 'gatehouse_http_requests_total', { listener: 'web', route: 'plain', code: '403' })).toBe(2);
    await expectIdle();
  });

  test('after a refused upgrade, the connection is not left hanging: closed with the answer, or the next request is served', async () => {
    const c = await Raw.open(gh.port('web'));
    c.socket.write(`GET /plain/chat HTTP/1.1\r\nHost: gw.test\r\n${UPGRADE}\r\n`);
    const r = await c.response();
    expect(r.status).toBe(403);
    if (r.headers.connection === 'close') {
      await c.until(() => c.closed || c.ended, 5_000, 'closed after the 403');
    } else {
      c.socket.write('GET /plain/next HTTP/1.1\r\nHost: gw.test\r\n\r\n');
      expect(await c.response(3_000)).toMatchObject({ status: 200, body: 'plain /plain/next ' });
    }
    c.socket.destroy();
    await expectIdle();
  });

  test('a backend that refuses the upgrade: its answer is relayed as it is, and no tunnel is left', async () => {
    await expect(open(`ws://127.0.0.1:${gh.port('web')}/ws/deny`)).rejects.toThrow('upgrade answered 401 denied');
    const c = await Raw.open(gh.port('web'));
    c.socket.write(`GET /ws/deny/raw HTTP/1.1\r\nHost: gw.test\r\n${UPGRADE}\r\n`);
    const r = await c.response();
    expect(r).toMatchObject({ status: 401, body: 'denied' });
    expect(r.headers['content-type']).toBe('text/plain');
    expect(r.headers.upgrade).toBeUndefined();
    c.socket.destroy();
    expect(metric(await metricsText(), 'gatehouse_http_requests_total', { listener: 'web', route: 'ws', code: '401' })).toBe(2);
    await expectIdle();
  });

  // BUG: as above (exchange.ts, End before Paused after a 101).
  test('a tunnel stays open across a reload that changes its listener\'s routes and another listener, and keeps passing messages', async () => {
    const n = accepted.length + 1;
    const client = await open(`ws://127.0.0.1:${gh.port('web')}/ws/reload`);
    const { peer: server } = await serverPeer(n);
    await roundTrip(client, server, 'before the reload');
    expect(await active('web')).toBe(1);

    // A new route on `web` and a changed route on `other`.
    writeFileSync(file, config({ route: '      - { name: extra, match: { pathPrefix: /extra }, upstream: chat }', otherHeader: 'two' }));
    const res = await gh.admin('/reload', { method: 'POST' });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ added: [], removed: [], changed: expect.arrayContaining(['listener:web', 'listener:other']) });
    // The new config serves (fresh connections, so both shards likely answer)...
    for (let i = 0; i < 4; i++) {
      expect(await get(gh.port('web'), `/extra/${i}`)).toEqual({ status: 200, body: `chat /extra/${i}` });
      expect(await get(gh.port('other'), `/o${i}`)).toEqual({ status: 200, body: `plain /o${i} two` });
    }
    // ...and the tunnel is the same connection, still counted, passing messages both ways.
    expect(accepted.length).toBe(n);
    expect(client.ws.readyState).toBe(WebSocket.OPEN);
    await roundTrip(client, server, 'after the reload');
    await roundTrip(server, client, Buffer.from('binary after the reload'));
    await until(async () => (await active('web')) === 1, 5_000, 'only the tunnel open');
    expect(await chatBusy()).toBe(1);

    client.ws.close(1000, 'done');
    expect(await server.closed).toEqual({ code: 1000, reason: 'done' });
    expect(await client.closed).toEqual({ code: 1000, reason: 'done' });
    await expectIdle();
  });
});
