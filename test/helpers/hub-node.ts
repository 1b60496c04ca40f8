import { once } from 'node:events';
import http from 'node:http';
import type net from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';

/** A frame a node received, with the connection (1, 2, ... in accept order) it came on. */
export interface NodeReceived {
  conn: number;
  frame: Record<string, unknown> & { type?: string };
}

/** How the node answers a `request` frame: `data` (a response), `error` (a response with an error), or nothing. */
export type NodeAnswer = { data?: unknown; error?: unknown; delayMs?: number } | undefined;

export interface HubNodeOptions {
  /** WebSocket path (any path is accepted; kept for URLs). */
  path?: string;
  /** Answer WebSocket pings (default true). False makes a node that the gateway must find dead. */
  autoPong?: boolean;
  /** How requests are answered; default echoes `{ echo: data }` at once. */
  answer?: (req: Record<string, unknown>) => NodeAnswer;
}

/**
 * A hub node for tests: a real `ws` server on 127.0.0.1 (port 0 at first) that records every
 * frame the gateway sends (hello, client-message, request, presence, client-gone, ack), answers
 * requests (configurable: data, error, delay, or never), can push and broadcast, and can be
 * stopped and started again on the same port (a node restart).
 *
 * @example
 * await using node = await HubNode.start();
 * // config: nodes: [ { id: n1, url: node.url } ]
 * await node.waitFor((f) => f.type === 'hello');
 * node.push({ type: 'push', userId: 'u1', data: 1 });
 */
export class HubNode {
  port = 0;
  readonly path: string;
  readonly opts: HubNodeOptions;
  /** Every frame received, in order. */
  readonly received: NodeReceived[] = [];
  /** Pings received from the gateway. */
  pings = 0;
  /** Connections accepted so far. */
  accepted = 0;
  /** Open connections now. */
  readonly sockets = new Set<WebSocket>();
  answer: (req: Record<string, unknown>) => NodeAnswer;
  #server: http.Server | undefined;
  #wss: WebSocketServer | undefined;
  readonly #timers = new Set<NodeJS.Timeout>();
  readonly #tcp = new Set<net.Socket>();

  private constructor(opts: HubNodeOptions) {
    this.opts = opts;
    this.path = opts.path ?? '/gate';
    this.answer = opts.answer ?? ((req) => ({ data: { echo: req.data } }));
  }

  static async start(opts: HubNodeOptions = {}): Promise<HubNode> {
    const n = new HubNode(opts);
    await n.restart();
    return n;
  }

  get url(): string {
    return `ws://127.0.0.1:${this.port}${this.path}`;
  }

  get running(): boolean {
    return this.#server !== undefined;
  }

  /** Frames of one type, in order. */
  frames(type: string): Record<string, unknown>[] {
    return this.received.filter((r) => r.frame.type === type).map((r) => r.frame);
  }

  /** Starts (again) on the same port. */
  async restart(): Promise<void> {
    if (this.#server) return;
    const server = http.createServer((_req, res) => res.writeHead(404).end());
    server.on('connection', (s) => {
      this.#tcp.add(s);
      s.on('close', () => this.#tcp.delete(s));
    });
    const wss = new WebSocketServer({ server, autoPong: this.opts.autoPong ?? true, perMessageDeflate: false });
    wss.on('connection', (ws) => this.#onConnection(ws));
    server.listen(this.port, '127.0.0.1');
    await once(server, 'listening');
    this.port = (server.address() as net.AddressInfo).port;
    this.#server = server;
    this.#wss = wss;
  }

  #onConnection(ws: WebSocket): void {
    const conn = ++this.accepted;
    this.sockets.add(ws);
    ws.on('error', () => {});
    ws.on('close', () => this.sockets.delete(ws));
    ws.on('ping', () => this.pings++);
    ws.on('message', (data, binary) => {
      if (binary) return;
      let frame: Record<string, unknown>;
      try {
        frame = JSON.parse(data.toString()) as Record<string, unknown>;
      } catch {
        return;
      }
      this.received.push({ conn, frame });
      if (frame.type === 'request') this.#answer(ws, frame);
    });
  }

  #answer(ws: WebSocket, req: Record<string, unknown>): void {
    const a = this.answer(req);
    if (!a) return;
    const frame = JSON.stringify(a.error !== undefined ? { type: 'response', id: req.id, error: a.error } : { type: 'response', id: req.id, data: a.data });
    if (!a.delayMs) {
      ws.send(frame);
      return;
    }
    const t = setTimeout(() => {
      this.#timers.delete(t);
      if (ws.readyState === ws.OPEN) ws.send(frame);
    }, a.delayMs);
    this.#timers.add(t);
  }

  /** Sends a frame (an object is stringified) on every open connection. Returns how many got it. */
  send(frame: unknown): number {
    const text = typeof frame === 'string' ? frame : JSON.stringify(frame);
    for (const ws of this.sockets) ws.send(text);
    return this.sockets.size;
  }

  push(frame: Record<string, unknown>): number {
    return this.send({ type: 'push', ...frame });
  }

  broadcast(data: unknown, id?: unknown): number {
    return this.send(id === undefined ? { type: 'broadcast', data } : { type: 'broadcast', data, id });
  }

  /** Resolves with the first received frame (from `from`, an index into `received`) matching `pred`. */
  async waitFor(pred: (f: Record<string, unknown>, conn: number) => boolean, timeoutMs = 5_000, from = 0): Promise<Record<string, unknown>> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      for (let i = from; i < this.received.length; i++) {
        const r = this.received[i]!;
        if (pred(r.frame, r.conn)) return r.frame;
      }
      if (performance.now() > deadline) throw new Error(`hub node: no matching frame within ${timeoutMs} ms; got ${JSON.stringify(this.received.slice(-10))}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** Stops: the server closes and every connection is dropped (a node crash). */
  async stop(): Promise<void> {
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    const server = this.#server;
    const wss = this.#wss;
    this.#server = undefined;
    this.#wss = undefined;
    if (!server) return;
    for (const ws of this.sockets) ws.terminate();
    for (const s of this.#tcp) s.destroy();
    wss?.close();
    server.close();
    await once(server, 'close');
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}
