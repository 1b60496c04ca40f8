/**
 * Test harness for the hub's data plane: a shard run in this thread with `runShard` over a
 * MessageChannel, the test playing the main thread (reads HubFromShard, sends HubToShard), real
 * `ws` clients, and JWTs minted with jose.
 */
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { once } from 'node:events';
import pino from 'pino';
import { SignJWT, type JWTPayload } from 'jose';
import { WebSocket, type ClientOptions } from 'ws';
import { runShard } from '../../src/workers/shard-runtime.ts';
import { StateTable } from '../../src/workers/state-table.ts';
import { live } from '../../src/runtime/live.ts';
import type { ShardConfig, ShardHubSettings, ShardListener } from '../../src/workers/shard-config.ts';
import type { FromShard, ShardResult, ToShard } from '../../src/workers/protocol.ts';
import type { ClientProxyActor } from '../../src/actors/client-proxy.ts';
import type { HubListenerActor } from '../../src/actors/hub-listener.ts';

export const SECRET = 'test-secret-of-reasonable-length-0123456789';
const log = pino({ level: process.env.HUB_TEST_LOG ?? 'silent' });

/** Polls `fn` until it returns a truthy value (or does not throw), up to `ms`. */
export async function until<T>(fn: () => T | undefined | false | null, what = 'condition', ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    let last: unknown;
    try {
      const v = fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setTimeout(r, 2));
  }
}

export function hubSettings(over: Partial<ShardHubSettings> = {}): ShardHubSettings {
  return {
    path: '/connect',
    jwt: { secret: SECRET, algorithms: ['HS256'] },
    maxClientsPerUser: 16,
    maxMessageSize: 64 * 1024,
    sendQueue: { maxMessages: 1000, onOverflow: 'close' },
    pingIntervalMs: 60_000,
    clientRateLimit: { perSecond: 100, burst: 200 },
    ...over,
  };
}

export function hubListener(over: Partial<ShardListener> = {}, hub: Partial<ShardHubSettings> = {}): ShardListener {
  return {
    name: 'hub',
    protocol: 'hub',
    host: '127.0.0.1',
    port: 0,
    upstream: undefined,
    maxConnections: 10_000,
    maxConnectionsPerIp: 0,
    idleTimeoutMs: 0,
    slot: 0,
    hub: hubSettings(hub),
    ...over,
  };
}

export function shardConfig(listeners: ShardListener[]): ShardConfig {
  return { listeners, upstreams: [], connectionActor: 'light', shutdownTimeoutMs: 5_000, debug: false, logLevel: 'silent' };
}

/** A shard in this thread, and the test as its main thread. */
export class ShardHarness {
  readonly shard: number;
  readonly table: StateTable;
  readonly port: MessagePort;
  readonly done: Promise<ShardResult>;
  /** Every message the shard posted, in order. */
  readonly messages: FromShard[] = [];
  ports = new Map<string, number>();
  #stopped = false;

  private constructor(shard: number, table: StateTable, port: MessagePort, done: Promise<ShardResult>) {
    this.shard = shard;
    this.table = table;
    this.port = port;
    this.done = done;
    port.on('message', (m: FromShard) => this.messages.push(m));
  }

  static async start(opts: { listeners?: ShardListener[]; shard?: number; table?: StateTable; ready?: string[] } = {}): Promise<ShardHarness> {
    const table = opts.table ?? StateTable.create();
    const shard = opts.shard ?? 0;
    const config = shardConfig(opts.listeners ?? [hubListener()]);
    const { port1, port2 } = new MessageChannel();
    const done = runShard({ shard, config, buffers: table.buffers, reusePort: true }, port2, { log, inThread: true });
    const h = new ShardHarness(shard, table, port1, done);
    const ready = await h.waitFor((m) => m.type === 'ready');
    for (const l of (ready as Extract<FromShard, { type: 'ready' }>).listeners) h.ports.set(l.name, l.port);
    if (opts.ready) for (const l of config.listeners) h.send({ type: 'hub-nodes', listener: l.name, ready: opts.ready });
    return h;
  }

  get hubPort(): number {
    return this.ports.get('hub')!;
  }

  send(m: ToShard): void {
    this.port.postMessage(m);
  }

  /** Sets the ready nodes and waits until the shard has them (a round trip through `counts`). */
  async setReady(ready: string[], listener = 'hub'): Promise<void> {
    this.send({ type: 'hub-nodes', listener, ready });
    await this.request({ type: 'counts', id: 0 });
  }

  /** A request/reply round trip: also a barrier (the shard handled everything sent before). */
  async request(m: Extract<ToShard, { id: number }>): Promise<unknown> {
    const id = 1_000_000 + Math.floor(Math.random() * 1e9);
    const from = this.messages.length;
    this.send({ ...m, id } as ToShard);
    const r = (await this.waitFor((x) => x.type === 'reply' && x.id === id, from)) as Extract<FromShard, { type: 'reply' }>;
    if (r.error) throw new Error(r.error.message);
    return r.value;
  }

  of<T extends FromShard['type']>(type: T): Extract<FromShard, { type: T }>[] {
    return this.messages.filter((m) => m.type === type) as Extract<FromShard, { type: T }>[];
  }

  async waitFor(pred: (m: FromShard) => boolean, from = 0, ms = 10_000): Promise<FromShard> {
    return until(() => this.messages.slice(from).find(pred), 'a message from the shard', ms);
  }

  /** Drains the shard (clients closed by the drain deadline if still open) and waits for it to end. */
  async stop(timeoutMs = 2_000): Promise<ShardResult> {
    if (!this.#stopped) {
      this.#stopped = true;
      this.send({ type: 'drain', timeoutMs });
    }
    return this.done;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop(200);
  }
}

/** The live client-proxy actors of this thread. */
export function liveClients(): ClientProxyActor[] {
  return live.list().filter((a) => a.type === 'client-proxy') as ClientProxyActor[];
}

/** The live hub listeners of this thread. */
export function hubListeners(): HubListenerActor[] {
  return live.list().filter((a) => a.type === 'listener' && (a.describe() as { protocol?: string } | undefined)?.protocol === 'hub') as HubListenerActor[];
}

export async function hs256(claims: JWTPayload, opts: { secret?: string; exp?: number | string | null; nbf?: number | string } = {}): Promise<string> {
  let j = new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setIssuedAt();
  if (opts.exp !== null) j = j.setExpirationTime(opts.exp ?? '1h');
  if (opts.nbf !== undefined) j = j.setNotBefore(opts.nbf);
  return j.sign(new TextEncoder().encode(opts.secret ?? SECRET));
}

export async function tokenFor(userId: string): Promise<string> {
  return hs256({ sub: userId });
}

/** A frame a client received: parsed JSON. */
export type Frame = Record<string, unknown> & { type: string };

/** A real `ws` client: every text frame it receives, parsed, and its close. */
export class TestClient {
  readonly ws: WebSocket;
  readonly frames: Frame[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  closeInfo: { code: number; reason: string } | undefined;
  clientId = '';

  constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('message', (d: Buffer, isBinary: boolean) => {
      if (!isBinary) this.frames.push(JSON.parse(d.toString()) as Frame);
    });
    ws.on('error', () => {});
    this.closed = new Promise((r) =>
      ws.once('close', (code: number, reason: Buffer) => {
        this.closeInfo = { code, reason: reason.toString() };
        r(this.closeInfo);
      }),
    );
  }

  static async connect(port: number, token: string | undefined, opts: ClientOptions & { query?: boolean; path?: string } = {}): Promise<TestClient> {
    const { query, path = '/connect', ...wsOpts } = opts;
    const url = `ws://127.0.0.1:${port}${path}${token !== undefined && query ? `?token=${encodeURIComponent(token)}` : ''}`;
    const headers: Record<string, string> = token !== undefined && !query ? { Authorization: `Bearer ${token}` } : {};
    const ws = new WebSocket(url, { headers, ...wsOpts });
    const c = new TestClient(ws);
    await Promise.race([once(ws, 'open'), c.closed.then(() => Promise.reject(new Error('closed before open')))]);
    const w = await c.next((f) => f.type === 'welcome');
    c.clientId = w.clientId as string;
    return c;
  }

  /** The first frame (from index `from`) matching `pred`. */
  async next(pred: (f: Frame) => boolean = () => true, from = 0, ms = 10_000): Promise<Frame> {
    return until(() => this.frames.slice(from).find(pred), 'a frame at the client', ms);
  }

  sendJson(v: unknown): void {
    this.ws.send(JSON.stringify(v));
  }

  async close(): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return;
    this.ws.close();
    await this.closed;
  }

  terminate(): Promise<unknown> {
    this.ws.terminate();
    return this.closed;
  }
}

/** An upgrade the gateway refuses: its HTTP status and JSON body (no WebSocket is opened). */
export async function refused(port: number, token: string | undefined, opts: { query?: boolean; path?: string; headers?: Record<string, string> } = {}): Promise<{ status: number; body: Record<string, unknown>; headers: Record<string, unknown> }> {
  const { query, path = '/connect' } = opts;
  const url = `ws://127.0.0.1:${port}${path}${token !== undefined && query ? `?token=${encodeURIComponent(token)}` : ''}`;
  const headers: Record<string, string> = { ...(token !== undefined && !query ? { Authorization: `Bearer ${token}` } : {}), ...opts.headers };
  const ws = new WebSocket(url, { headers });
  return new Promise((resolve, reject) => {
    ws.on('open', () => {
      ws.terminate();
      reject(new Error('the upgrade was accepted'));
    });
    ws.on('error', () => {});
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => {
        ws.terminate();
        resolve({ status: res.statusCode ?? 0, body: body ? (JSON.parse(body) as Record<string, unknown>) : {}, headers: res.headers });
      });
    });
  });
}
