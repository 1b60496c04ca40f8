/**
 * Churn and lifecycle of an HTTP listener, on the real daemon at workers: 2:
 * - 20,000 requests over fresh connections (`Connection: close`) and 20,000 over kept-alive
 *   connections, with bounded concurrency: every answer right, then every map and gauge back to
 *   zero (state table, gatehouse_connections_active, http-connection actors, requests in flight,
 *   busy pooled sockets);
 * - a drain with a request in flight: it completes with `Connection: close`, idle kept-alive
 *   connections are closed at once, new connections are refused;
 * - a reload that moves a route to another upstream: the next request of a kept-alive
 *   connection goes to the new upstream, on the same connection.
 */
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Daemon, metric, tempDir, until } from '../helpers/daemon.ts';
import { findNodes, type ActorNode } from '../helpers/upstreams.ts';

/** One parsed response. */
interface Res {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * A raw HTTP/1.1 client connection: one request at a time, responses framed by Content-Length
 * (what the backends here send), exact bytes on the wire.
 */
class RawConn {
  readonly socket: net.Socket;
  #buf: Buffer = Buffer.alloc(0);
  #wake: (() => void) | undefined;
  closed = false;
  readonly ended: Promise<void>;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('error', () => {});
    socket.on('data', (d: Buffer) => {
      this.#buf = this.#buf.length === 0 ? d : Buffer.concat([this.#buf, d]);
      this.#wake?.();
    });
    this.ended = new Promise((resolve) =>
      socket.once('close', () => {
        this.closed = true;
        this.#wake?.();
        resolve();
      }),
    );
  }

  static async open(port: number): Promise<RawConn> {
    const s = net.connect({ port, host: '127.0.0.1' });
    const c = new RawConn(s);
    await once(s, 'connect');
    return c;
  }

  /** Sends `GET path` and reads its response; rejects if the connection closes first or nothing comes within 10 s. */
  async get(path: string, extra = ''): Promise<Res> {
    this.socket.write(`GET ${path} HTTP/1.1\r\nHost: churn.test\r\n${extra}\r\n`);
    return this.read();
  }

  async read(): Promise<Res> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const r = this.#take();
      if (r) return r;
      if (this.closed) throw new Error(`connection closed before a whole response (${JSON.stringify(this.#buf.toString('latin1').slice(0, 200))})`);
      if (Date.now() > deadline) throw new Error('no whole response within 10 s');
      await this.#event();
    }
  }

  /** Resolves once the connection is closed; rejects after `ms`. */
  async waitClosed(ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error(`connection not closed within ${ms} ms`);
      await this.#event();
    }
  }

  /** The next data or close (or 200 ms: the caller checks its deadline). */
  #event(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.#wake = resolve;
      setTimeout(resolve, 200).unref();
    });
  }

  #take(): Res | undefined {
    const i = this.#buf.indexOf('\r\n\r\n');
    if (i < 0) return undefined;
    const lines = this.#buf.subarray(0, i).toString('latin1').split('\r\n');
    const headers: Record<string, string> = {};
    for (const l of lines.slice(1)) {
      const c = l.indexOf(':');
      headers[l.slice(0, c).toLowerCase()] = l.slice(c + 1).trim();
    }
    const len = Number(headers['content-length'] ?? 0);
    if (this.#buf.length < i + 4 + len) return undefined;
    const body = this.#buf.subarray(i + 4, i + 4 + len).toString();
    this.#buf = this.#buf.subarray(i + 4 + len);
    return { status: Number(lines[0]!.slice(9, 12)), headers, body };
  }

  close(): void {
    this.socket.destroy();
  }

  /** A reset: whatever the connection was doing, the gateway sees it gone at once. */
  [Symbol.dispose](): void {
    if (!this.socket.destroyed) this.socket.resetAndDestroy();
  }
}

/** `GET path` on a fresh connection with `Connection: close`: the response, and the gateway must close the connection after it. */
async function getOnce(port: number, path: string): Promise<Res> {
  const c = await RawConn.open(port);
  try {
    const r = await c.get(path, 'Connection: close\r\n');
    await c.waitClosed(10_000);
    return r;
  } finally {
    c.close();
  }
}

/** Runs `total` jobs with at most `parallel` at once; each job gets its sequence number. */
async function bounded(total: number, parallel: number, job: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < total) await job(next++);
    }),
  );
}

/** A backend answering `NAME URL` with Content-Length; counts the TCP connections it accepted. */
async function backend(name: string, handler?: http.RequestListener): Promise<{ server: http.Server; port: number; accepted: () => number; close(): Promise<void> }> {
  let accepted = 0;
  const server = http.createServer(handler ?? ((req, res) => res.end(`${name} ${req.url}`)));
  server.keepAliveTimeout = 10_000;
  server.on('connection', () => accepted++);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    server,
    port: (server.address() as net.AddressInfo).port,
    accepted: () => accepted,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}

async function metricsText(gh: Daemon): Promise<string> {
  return (await gh.admin('/metrics')).text();
}

/** Each shard's node of http listener `name`. */
async function listenerNodes(gh: Daemon, name: string): Promise<ActorNode[]> {
  return findNodes(await gh.json<ActorNode>('/actors'), (n) => n.type === 'listener' && n.id === `listener:${name}`).map((x) => x.node);
}

const TOTAL = 20_000;
const PARALLEL = 50;

describe('request churn on an http listener (workers: 2)', () => {
  let gh: Daemon;
  let dir: ReturnType<typeof tempDir>;
  let a: Awaited<ReturnType<typeof backend>>;
  let b: Awaited<ReturnType<typeof backend>>;

  beforeAll(async () => {
    a = await backend('a');
    b = await backend('b');
    dir = tempDir();
    gh = await Daemon.start(
      dir.write(
        'gh.yaml',
        `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2, shutdownTimeout: 2s }
upstreams:
  - name: app
    healthCheck: { enabled: false }
    pool: { maxConnections: 64, idleTimeout: 4s }
    backends: [ "127.0.0.1:${a.port}", "127.0.0.1:${b.port}" ]
listeners:
  - name: web
    protocol: http
    listen: 127.0.0.1:0
    routes: [ { name: api, match: { pathPrefix: /api }, upstream: app, stripPrefix: true }, { name: site, upstream: app } ]
`,
      ),
    );
  });

  afterAll(async () => {
    await gh?.[Symbol.asyncDispose]();
    await a?.close();
    await b?.close();
    dir?.[Symbol.dispose]();
  });

  /** Requests answered so far, by route and code. */
  async function answered(route: string, code: string): Promise<number> {
    return metric(await metricsText(gh), 'gatehouse_http_requests_total', { listener: 'web', route, code }) ?? 0;
  }

  /**
   * Every count back to zero: the state table (listener and backend places), the connection
   * gauge, http-connection actors (metric and tree), each shard's registry and requests in
   * flight, and every pool's busy and queued sockets.
   */
  async function expectAllZero(): Promise<void> {
    expect(await gh.idleLeftovers()).toEqual([]);
    const text = (await until(
      async () => {
        const t = await metricsText(gh);
        return metric(t, 'gatehouse_connections_active', { listener: 'web' }) === 0 && (metric(t, 'gatehouse_actors', { type: 'http-connection' }) ?? 0) === 0 ? t : undefined;
      },
      10_000,
      'no connection left',
    ))!;
    expect(metric(text, 'gatehouse_connections_active', { listener: 'web' })).toBe(0);
    expect(findNodes(await gh.json<ActorNode>('/actors'), (n) => n.type === 'http-connection')).toEqual([]);
    const nodes = await listenerNodes(gh, 'web');
    expect(nodes).toHaveLength(2);
    for (const l of nodes) {
      expect([l.connections, l.registry, l.requestsInFlight]).toEqual([0, { byId: 0 }, 0]);
      const pools = l.pools as Record<string, { busy: number; idle: number; queued: number }>;
      for (const [key, p] of Object.entries(pools)) expect([key, p.busy, p.queued]).toEqual([key, 0, 0]);
    }
  }

  test(`${TOTAL} requests over fresh connections (Connection: close), ${PARALLEL} at once: every answer right, every count back to zero`, async () => {
    const port = gh.port('web');
    const before = (await answered('api', '200')) + (await answered('site', '200'));
    const closedBefore = metric(await metricsText(gh), 'gatehouse_connections_total', { listener: 'web', outcome: 'ok' }) ?? 0;
    const wrong: string[] = [];
    await bounded(TOTAL, PARALLEL, async (i) => {
      // Half through each route: stripPrefix on one, the path as sent on the other.
      const path = i % 2 === 0 ? `/api/f/${i}` : `/s/${i}`;
      const r = await getOnce(port, path).catch((err: Error): Res => ({ status: 0, headers: {}, body: err.message }));
      const want = i % 2 === 0 ? `/f/${i}` : `/s/${i}`;
      if (r.status !== 200 || !/^[ab] /.test(r.body) || r.body.slice(2) !== want || r.headers.connection !== 'close') {
        wrong.push(`${path}: ${r.status} ${r.headers.connection} ${r.body.slice(0, 100)}`);
      }
    });
    expect(wrong.slice(0, 10)).toEqual([]);
    expect(wrong.length).toBe(0);
    // Counted once each, as answered; every connection ended ok.
    expect((await answered('api', '200')) + (await answered('site', '200')) - before).toBe(TOTAL);
    await until(
      async () => (metric(await metricsText(gh), 'gatehouse_connections_total', { listener: 'web', outcome: 'ok' }) ?? 0) - closedBefore === TOTAL,
      10_000,
      `${TOTAL} connections counted as ended ok`,
    );
    await expectAllZero();
  }, 120_000);

  test(`${TOTAL} requests over ${PARALLEL} kept-alive connections: same connection throughout, pooled upstream sockets reused, every count back to zero`, async () => {
    const port = gh.port('web');
    const before = (await answered('api', '200')) + (await answered('site', '200'));
    const text0 = await metricsText(gh);
    const opened0 = ['ok', 'error'].reduce((n, outcome) => n + (metric(text0, 'gatehouse_connections_total', { listener: 'web', outcome }) ?? 0), 0);
    const upstream0 = a.accepted() + b.accepted();
    const conns = await Promise.all(Array.from({ length: PARALLEL }, () => RawConn.open(port)));
    const wrong: string[] = [];
    let next = 0;
    await Promise.all(
      conns.map(async (c) => {
        while (next < TOTAL) {
          const i = next++;
          const path = i % 2 === 0 ? `/api/k/${i}` : `/k/${i}`;
          const r = await c.get(path).catch((err: Error) => ({ status: 0, headers: {} as Record<string, string>, body: err.message }));
          const want = i % 2 === 0 ? `/k/${i}` : `/k/${i}`;
          if (r.status !== 200 || r.body.slice(2) !== want || r.headers.connection === 'close') wrong.push(`${path}: ${r.status} ${r.headers.connection} ${r.body.slice(0, 100)}`);
          if (c.closed) break;
        }
      }),
    );
    expect(wrong.slice(0, 10)).toEqual([]);
    // No client connection was closed by the gateway.
    expect(conns.filter((c) => c.closed)).toHaveLength(0);
    expect((await answered('api', '200')) + (await answered('site', '200')) - before).toBe(TOTAL);
    // While they are open, the gateway counts exactly these connections...
    const text1 = await metricsText(gh);
    expect(metric(text1, 'gatehouse_connections_active', { listener: 'web' })).toBe(PARALLEL);
    // ...and the backends saw few connections: the pools reused their sockets (at most 64 per
    // backend and shard, whatever the 20,000 requests).
    expect(a.accepted() + b.accepted() - upstream0).toBeLessThanOrEqual(2 * 2 * 64);
    const idle = findNodes(await gh.json<ActorNode>('/actors'), (n) => n.type === 'http-connection').map((x) => x.node.state);
    expect(idle).toEqual(Array.from({ length: PARALLEL }, () => 'keepalive_idle'));
    for (const c of conns) c.close();
    await Promise.all(conns.map((c) => c.ended));
    await expectAllZero();
    const text2 = await metricsText(gh);
    const opened = ['ok', 'error'].reduce((n, outcome) => n + (metric(text2, 'gatehouse_connections_total', { listener: 'web', outcome }) ?? 0), 0);
    expect(opened - opened0).toBe(PARALLEL);
  }, 120_000);
});

describe('drain with a request in flight', () => {
  test('the request in flight completes with Connection: close, idle kept-alive connections close at once, new connections are refused', async () => {
    let release: (() => void) | undefined;
    const slowSeen = Promise.withResolvers<void>();
    await using be = await backendDisposable('be', (req, res) => {
      if (req.url === '/slow') {
        slowSeen.resolve();
        release = () => res.end('slow done');
        return;
      }
      res.end(`be ${req.url}`);
    });
    using dir = tempDir();
    await using gh = await Daemon.start(
      dir.write(
        'gh.yaml',
        `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2, shutdownTimeout: 10s }
upstreams: [ { name: app, healthCheck: { enabled: false }, backends: [ "127.0.0.1:${be.port}" ] } ]
listeners:
  - { name: web, protocol: http, listen: 127.0.0.1:0, routes: [ { name: all, upstream: app } ] }
`,
      ),
    );
    const port = gh.port('web');
    // Idle kept-alive connections (several, so that both shards likely hold some).
    const idle = await Promise.all(Array.from({ length: 6 }, () => RawConn.open(port)));
    for (const c of idle) expect((await c.get('/hello')).body).toBe('be /hello');
    // One request in flight: the backend holds it.
    const busy = await RawConn.open(port);
    busy.socket.write('GET /slow HTTP/1.1\r\nHost: churn.test\r\n\r\n');
    await slowSeen.promise;

    const res = await gh.admin('/drain', { method: 'POST' });
    expect(res.status).toBe(202);
    // Idle kept-alive connections are closed at once (not at keepAliveTimeout, 60 s).
    await Promise.all(idle.map((c) => c.ended));
    // New connections are refused, on every shard.
    await until(
      () =>
        new Promise<boolean>((resolve) => {
          const c = net.connect({ port, host: '127.0.0.1' });
          c.on('connect', () => {
            c.destroy();
            resolve(false);
          });
          c.on('error', () => resolve(true));
        }),
      10_000,
      'the listener refuses new connections',
    );
    for (let i = 0; i < 4; i++) {
      const err = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
        const c = net.connect({ port, host: '127.0.0.1' });
        c.on('connect', () => {
          c.destroy();
          resolve(undefined);
        });
        c.on('error', resolve);
      });
      expect(err?.code).toBe('ECONNREFUSED');
    }
    // The request in flight was not cut: it completes, and its answer closes the connection.
    expect(busy.closed).toBe(false);
    release!();
    const r = await busy.read();
    expect(r).toMatchObject({ status: 200, body: 'slow done' });
    expect(r.headers.connection).toBe('close');
    await busy.ended;
    // Nothing is left open, the daemon reports not ready, and stops cleanly.
    expect(await gh.idleLeftovers()).toEqual([]);
    expect((await gh.admin('/readyz')).status).toBe(503);
    expect(await gh.stop()).toBe(0);
  }, 60_000);
});

describe('a client that goes away', () => {
  test('a reset while its request waits for the backend: the upstream request is dropped at once and counted 499', async () => {
    const gone = Promise.withResolvers<void>();
    const seen = Promise.withResolvers<void>();
    await using be = await backendDisposable('be', (req, res) => {
      if (req.url !== '/hold') return res.end(`be ${req.url}`);
      seen.resolve();
      res.on('close', () => gone.resolve()); // never answered: closed only when the gateway drops it
    });
    using dir = tempDir();
    await using gh = await Daemon.start(
      dir.write(
        'gh.yaml',
        `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 1, shutdownTimeout: 2s }
upstreams: [ { name: app, healthCheck: { enabled: false }, backends: [ "127.0.0.1:${be.port}" ] } ]
listeners: [ { name: web, protocol: http, listen: 127.0.0.1:0, routes: [ { name: all, upstream: app, timeout: 60s } ] } ]
`,
      ),
    );
    // The first request of the shard: its pooled socket is a fresh connect.
    const c = await RawConn.open(gh.port('web'));
    c.socket.write('GET /hold HTTP/1.1\r\nHost: churn.test\r\n\r\n');
    await seen.promise;
    // A reset (a FIN alone is taken as a half-close: the response is still owed).
    c.socket.resetAndDestroy();
    // The gateway sees the client go and drops the backend's request (not at the 60 s timeout).
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([gone.promise, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('the backend\'s request was not dropped within 5 s')), 5_000)))]);
    } finally {
      clearTimeout(timer);
    }
    await until(async () => (metric(await metricsText(gh), 'gatehouse_http_requests_total', { listener: 'web', route: 'all', code: '499' }) ?? 0) === 1, 5_000, 'counted 499');
    expect(await gh.idleLeftovers()).toEqual([]);
    expect(await gh.stop()).toBe(0);
  });
});

describe('reload of routes', () => {
  test('a kept-alive connection: the request after a reload that moves its route goes to the new upstream, on the same connection', async () => {
    await using one = await backendDisposable('one');
    await using two = await backendDisposable('two');
    using dir = tempDir();
    const cfg = (upstream: string) => `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2, shutdownTimeout: 2s }
upstreams:
  - { name: one, healthCheck: { enabled: false }, backends: [ "127.0.0.1:${one.port}" ] }
  - { name: two, healthCheck: { enabled: false }, backends: [ "127.0.0.1:${two.port}" ] }
listeners:
  - name: web
    protocol: http
    listen: 127.0.0.1:0
    routes: [ { name: api, match: { pathPrefix: /api }, upstream: ${upstream}, stripPrefix: true }, { name: rest, upstream: one } ]
`;
    const file = dir.write('gh.yaml', cfg('one'));
    await using gh = await Daemon.start(file);
    const c = await RawConn.open(gh.port('web'));
    expect(await c.get('/api/before')).toMatchObject({ status: 200, body: 'one /before' });

    writeFileSync(file, cfg('two'));
    const res = await gh.admin('/reload', { method: 'POST' });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ changed: ['listener:web'] });

    // The same connection: its next request uses the new routes.
    const after = await c.get('/api/after');
    expect(after).toMatchObject({ status: 200, body: 'two /after' });
    expect(after.headers.connection).toBeUndefined();
    // The other route did not move; and the connection was never dropped.
    expect(await c.get('/else')).toMatchObject({ status: 200, body: 'one /else' });
    expect(c.closed).toBe(false);
    const text = await metricsText(gh);
    expect(metric(text, 'gatehouse_connections_active', { listener: 'web' })).toBe(1);
    expect(metric(text, 'gatehouse_connections_total', { listener: 'web', outcome: 'ok' }) ?? 0).toBe(0);
    c.close();
    await c.ended;
    expect(await gh.idleLeftovers()).toEqual([]);
    expect(await gh.stop()).toBe(0);
  });
});

describe('reloads under load', () => {
  test('kept-alive clients through reloads that swap an upstream\'s backend: no request fails, no connection drops, no pooled socket left busy', async () => {
    await using one = await backendDisposable('one');
    await using two = await backendDisposable('two');
    using dir = tempDir();
    // A small pool, so that requests wait in its queue (or for a connect) while a reload closes it.
    const cfg = (b: number, gen: number) => `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2, shutdownTimeout: 2s }
upstreams:
  - { name: app, healthCheck: { enabled: false }, pool: { maxConnections: 2 }, backends: [ "127.0.0.1:${b}" ] }
listeners:
  - name: web
    protocol: http
    listen: 127.0.0.1:0
    routes: [ { name: all, upstream: app, headers: { request: { set: { x-gen: "${gen}" } } } } ]
`;
    const file = dir.write('gh.yaml', cfg(one.port, 0));
    await using gh = await Daemon.start(file);
    const port = gh.port('web');
    const clients = await Promise.all(Array.from({ length: 16 }, () => RawConn.open(port)));
    const failures: string[] = [];
    let done = 0;
    let stop = false;
    const load = Promise.all(
      clients.map(async (c, k) => {
        for (let i = 0; !stop && !c.closed; i++) {
          const path = `/c${k}/${i}`;
          const r = await c.get(path).catch((err: Error): Res => ({ status: 0, headers: {}, body: err.message }));
          if (r.status !== 200 || !/^(one|two) /.test(r.body) || r.body.slice(4) !== path) failures.push(`${path}: ${r.status} ${r.body.slice(0, 100)}`);
          done++;
        }
      }),
    );
    const backends = [one, two];
    for (let gen = 1; gen <= 6; gen++) {
      const target = done + 300;
      await until(() => done >= target || failures.length > 0, 20_000, 'requests between reloads');
      writeFileSync(file, cfg(backends[gen % 2]!.port, gen));
      const res = await gh.admin('/reload', { method: 'POST' });
      expect(res.status).toBe(200);
    }
    const last = done + 300;
    await until(() => done >= last || failures.length > 0, 20_000, 'requests after the last reload');
    stop = true;
    await load;
    expect(failures.slice(0, 10)).toEqual([]);
    expect(clients.filter((c) => c.closed)).toHaveLength(0);
    // After the last reload (backend one), requests go to one only.
    for (const c of clients.slice(0, 4)) expect((await c.get('/last')).body).toBe('one /last');
    for (const c of clients) c.close();
    await Promise.all(clients.map((c) => c.ended));
    expect(await gh.idleLeftovers()).toEqual([]);
    for (const l of await listenerNodes(gh, 'web')) {
      for (const p of Object.values(l.pools as Record<string, { busy: number; queued: number }>)) expect([p.busy, p.queued]).toEqual([0, 0]);
    }
    expect(await gh.stop()).toBe(0);
  }, 60_000);
  test('a request waiting for a pooled socket when a reload removes its backend goes to the new backend, and the old pool is gone', async () => {
    let release: (() => void) | undefined;
    const held = Promise.withResolvers<void>();
    await using old = await backendDisposable('old', (req, res) => {
      if (req.url === '/hold') {
        release = () => res.end('old /hold');
        held.resolve();
        return;
      }
      res.end(`old ${req.url}`);
    });
    await using next = await backendDisposable('next');
    using dir = tempDir();
    const cfg = (b: number) => `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 1, shutdownTimeout: 2s }
upstreams: [ { name: app, healthCheck: { enabled: false }, pool: { maxConnections: 1 }, backends: [ "127.0.0.1:${b}" ] } ]
listeners: [ { name: web, protocol: http, listen: 127.0.0.1:0, routes: [ { name: all, upstream: app } ] } ]
`;
    const file = dir.write('gh.yaml', cfg(old.port));
    await using gh = await Daemon.start(file);
    const port = gh.port('web');
    // The pool's only socket is busy with /hold; /waiting waits in the pool's queue.
    using first = await RawConn.open(port);
    first.socket.write('GET /hold HTTP/1.1\r\nHost: churn.test\r\n\r\n');
    await held.promise;
    using second = await RawConn.open(port);
    second.socket.write('GET /waiting HTTP/1.1\r\nHost: churn.test\r\n\r\n');
    const pools = async (): Promise<Record<string, { busy: number; queued: number }>> => (await listenerNodes(gh, 'web'))[0]!.pools as Record<string, { busy: number; queued: number }>;
    await until(async () => (await pools())[`app/127.0.0.1:${old.port}`]?.queued === 1, 10_000, 'a request queued in the pool');

    writeFileSync(file, cfg(next.port));
    expect((await gh.admin('/reload', { method: 'POST' })).status).toBe(200);
    // The queued request could not get a socket to the removed backend: it goes to the new one.
    expect(await second.read()).toMatchObject({ status: 200, body: 'next /waiting' });
    // The request in flight on the removed backend completes there.
    release!();
    expect(await first.read()).toMatchObject({ status: 200, body: 'old /hold' });
    // Once it ended, the removed backend's pool is gone.
    await until(async () => Object.keys(await pools()).join() === `app/127.0.0.1:${next.port}`, 5_000, 'only the new backend\'s pool');
    first.close();
    second.close();
    await Promise.all([first.ended, second.ended]);
    expect(await gh.idleLeftovers()).toEqual([]);
    expect(await gh.stop()).toBe(0);
  });
});

/** {@link backend} as a disposable (`await using`). */
async function backendDisposable(name: string, handler?: http.RequestListener): Promise<Awaited<ReturnType<typeof backend>> & { [Symbol.asyncDispose](): Promise<void> }> {
  const b = await backend(name, handler);
  return { ...b, [Symbol.asyncDispose]: () => b.close() };
}
