import http from 'node:http';
import { refusedPort } from '../helpers/ports.ts';
import net from 'node:net';
import { once } from 'node:events';
import { Client } from 'undici';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { Daemon, metric, tempDir, until } from '../helpers/daemon.ts';
import { backendView, findNodes, metricsText, type ActorNode } from '../helpers/upstreams.ts';

/**
 * Upstream resilience of the HTTP listener, end to end: the daemon runs from its CLI as a child
 * process with two worker-thread shards, in front of real node:http backends on 127.0.0.1 whose
 * misbehaviour each test scripts (reset before answering, 502, half a response, silence, garbage),
 * driven by real clients (node:http, undici, raw sockets). One daemon serves the whole file: one
 * `protocol: http` listener with a route and an upstream per scenario, so that each test reads
 * its own backends' counts and its own route's metrics. After each test the state table must be
 * back to zero.
 *
 * Round robin runs per shard and a fresh client connection lands on either shard, so a test
 * cannot choose which backend a request tries first. It does not need to: round robin over two
 * backends alternates within a shard, and a request that fails on backend X and is retried on Y
 * leaves the shard's pointer on X again. So out of N sequential requests, at most one per shard
 * (two in all) avoids the failing backend; the tests rely on that bound and on what each backend
 * saw, never on which one came first.
 */

// ---- backends -------------------------------------------------------------------------------

interface Hit {
  method: string;
  path: string;
  body: string;
  /** The backend's connection number (1-based, per backend). */
  conn: number;
  req: http.IncomingMessage;
  res: http.ServerResponse;
}

/** A node:http backend whose every request goes through `act` (default: 200, body `NAME METHOD PATH BODY`). */
interface Backend {
  readonly name: string;
  readonly port: number;
  readonly address: string;
  readonly hits: Hit[];
  /** Requests `act` kept without answering (see {@link hold}). */
  readonly held: Hit[];
  /** Connections accepted / closed so far (by number). */
  conns: number;
  readonly closed: Set<number>;
  act: (h: Hit, b: Backend) => void;
  paths(prefix?: string): string[];
  [Symbol.asyncDispose](): Promise<void>;
}

const kConn = Symbol('conn');
type NumberedSocket = net.Socket & { [kConn]: number };

function answer(h: Hit, b: Backend, status = 200, text = `${b.name} ${h.method} ${h.path} ${h.body}`): void {
  h.res.statusCode = status;
  h.res.setHeader('content-type', 'text/plain');
  h.res.end(text);
}
function hold(h: Hit, b: Backend): void {
  b.held.push(h);
}
/** Takes the held requests out of the list, then does `fn` to each (requests held meanwhile stay held). */
function takeHeld(b: Backend, fn: (h: Hit) => void): number {
  const list = b.held.splice(0);
  for (const h of list) fn(h);
  return list.length;
}
const reset = (h: Hit): void => {
  if (!h.req.socket.destroyed) h.req.socket.resetAndDestroy();
};

async function startBackend(name: string, act: Backend['act'] = answer): Promise<Backend> {
  const sockets = new Set<net.Socket>();
  const b = {
    name, hits: [] as Hit[], held: [] as Hit[], conns: 0, closed: new Set<number>(), act,
    paths: (prefix = '') => b.hits.filter((h) => h.path.startsWith(prefix)).map((h) => h.path),
  } as unknown as Backend & { port: number; address: string };
  const server = http.createServer({ keepAliveTimeout: 60_000, maxHeaderSize: 1024 * 1024 }, (req, res) => {
    let body = '';
    req.setEncoding('latin1');
    req.on('data', (d: string) => (body += d));
    req.on('end', () => {
      const h: Hit = { method: req.method!, path: req.url!, body, conn: (req.socket as NumberedSocket)[kConn], req, res };
      b.hits.push(h);
      b.act(h, b);
    });
  });
  server.on('connection', (s: NumberedSocket) => {
    s[kConn] = ++b.conns;
    sockets.add(s);
    s.on('close', () => {
      sockets.delete(s);
      b.closed.add(s[kConn]);
    });
  });
  server.on('clientError', (_err, s) => s.destroy());
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  b.port = (server.address() as net.AddressInfo).port;
  b.address = `127.0.0.1:${b.port}`;
  b[Symbol.asyncDispose] = async () => {
    for (const s of sockets) s.destroy();
    server.close();
    await once(server, 'close');
  };
  return b;
}

/** A port on 127.0.0.1 with nothing listening (connects to it are refused). */
const deadPort = refusedPort;

// ---- clients --------------------------------------------------------------------------------

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One request on a fresh client connection (`Connection: close`). */
function send(port: number, method: string, path: string, body?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, method, path, agent: false, signal: AbortSignal.timeout(10_000), headers: body === undefined ? {} : { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) } },
      (res) => {
        let text = '';
        res.setEncoding('latin1');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: text }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** The `error` code of a gateway answer (its JSON body). */
function gatewayError(r: Reply): string | undefined {
  if (r.headers['content-type'] !== 'application/json') return undefined;
  const j = JSON.parse(r.body) as { error?: string; requestId?: string };
  expect(j.requestId).toBe(r.headers['x-request-id']);
  return j.error;
}

/** A raw client connection: what it read so far, and how it ended. */
function rawClient(port: number, request: string): { sock: net.Socket; text: () => string; ended: Promise<{ code: string | undefined; at: number }> } {
  const sock = net.connect({ port, host: '127.0.0.1' });
  let text = '';
  let code: string | undefined;
  sock.on('data', (d: Buffer) => (text += d.toString('latin1')));
  sock.on('error', (err: NodeJS.ErrnoException) => (code = err.code));
  const ended = new Promise<{ code: string | undefined; at: number }>((resolve) => sock.once('close', () => resolve({ code, at: performance.now() })));
  sock.write(request);
  return { sock, text: () => text, ended };
}

// ---- the daemon -----------------------------------------------------------------------------

const off = 'healthCheck: { enabled: false }\n    circuitBreaker: { enabled: false }';

/** Every route of listener `web`: prefix → route (the `route` metric label). */
const ROUTES: [prefix: string, route: string][] = [
  ['/rs', 'reset'], ['/cf', 'connect'], ['/st', 'status'], ['/one', 'one'], ['/trial', 'trial'], ['/half', 'half'], ['/bud', 'budget'], ['/bst', 'budget-status'],
  ['/slow', 'slow'], ['/bad', 'invalid'], ['/sick', 'sick'], ['/brk', 'breaker'], ['/tiny', 'tiny'],
  ['/rr', 'rr'], ['/lc', 'lc'],
];
const routeOf = (path: string): string => ROUTES.find(([p]) => path === p || path.startsWith(`${p}/`))?.[1] ?? '';

function config(b: Record<string, string>, dead: Record<string, number>, tinyPool = 1): string {
  const up = (name: string, backends: string[], extra = off) => `  - name: ${name}
    balance: ${name === 'lc' ? 'least_connections' : 'round_robin'}
    connectRetries: 0
    ${extra}
    backends: [ ${backends.map((a) => `"${a}"`).join(', ')} ]`;
  const at = (p: number) => `127.0.0.1:${p}`;
  return `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2, shutdownTimeout: 5s }
log: { level: info }
upstreams:
${up('rs', [b.R!, b.G1!])}
${up('cf', [at(dead.cf!), b.G2!])}
${up('st', [b.B502!, b.G3!])}
${up('one', [b.U!])}
${up('trial', [b.X!, b.Y!], 'healthCheck: { enabled: false }\n    circuitBreaker: { failureThreshold: 1, successThreshold: 1, openFor: 200ms }\n    connectTimeout: 1s')}
${up('half', [b.H!, b.G4!])}
${up('bud', [b.K1!, b.K2!])}
${up('slow', [b.S!])}
${up('bad', [b.Z!])}
${up('sick', [at(dead.sick!)], 'healthCheck: { type: tcp, interval: 100ms, timeout: 100ms, unhealthyThreshold: 1 }\n    circuitBreaker: { enabled: false }')}
${up('brk', [at(dead.brk!)], 'healthCheck: { enabled: false }\n    circuitBreaker: { failureThreshold: 2, openFor: 1h }')}
${up('tiny', [b.T!], `${off}\n    connectTimeout: 300ms\n    pool: { maxConnections: ${tinyPool} }`)}
${up('rr', [b.A!, b.B!])}
${up('lc', [b.C!, b.D!])}
${up('wide', [b.W!])}
listeners:
  - name: web
    protocol: http
    listen: "127.0.0.1:0"
    routes:
      - { name: reset, match: { pathPrefix: /rs }, upstream: rs, retries: 1 }
      - { name: connect, match: { pathPrefix: /cf }, upstream: cf, retries: 1 }
      - { name: status, match: { pathPrefix: /st }, upstream: st, retries: 1, retryOn: [502] }
      - { name: one, match: { pathPrefix: /one }, upstream: one, retries: 2, retryOn: [502, 503, 504] }
      - { name: trial, match: { pathPrefix: /trial }, upstream: trial, retries: 1, retryOn: [reset, 502] }
      - { name: half, match: { pathPrefix: /half }, upstream: half, retries: 1, retryOn: [connect-failure, reset, 502] }
      - { name: budget, match: { pathPrefix: /bud }, upstream: bud, retries: 1 }
      - { name: budget-status, match: { pathPrefix: /bst }, upstream: bud, retries: 1, retryOn: [503] }
      - { name: slow, match: { pathPrefix: /slow }, upstream: slow, timeout: 300ms, idleTimeout: 300ms }
      - { name: invalid, match: { pathPrefix: /bad }, upstream: bad }
      - { name: sick, match: { pathPrefix: /sick }, upstream: sick }
      - { name: breaker, match: { pathPrefix: /brk }, upstream: brk }
      - { name: tiny, match: { pathPrefix: /tiny }, upstream: tiny, timeout: 10s }
      - { name: rr, match: { pathPrefix: /rr }, upstream: rr }
      - { name: lc, match: { pathPrefix: /lc }, upstream: lc }
  - name: wide
    protocol: http
    listen: "127.0.0.1:0"
    maxHeaderSize: 256KiB
    routes:
      - { name: wide, upstream: wide }
`;
}

describe('HTTP listener: upstream failures, retries, timeouts, pool limits and balancers', () => {
  let gh: Daemon;
  let port = 0;
  let dir: ReturnType<typeof tempDir>;
  let configFile = '';
  let writeConfig: (tinyPool: number) => void = () => {};
  const backends: Record<string, Backend> = {};
  const be = (n: string): Backend => backends[n]!;
  /** What clients saw, `route code` → count, and the retries backends saw, upstream → count: the metrics must say the same. */
  const seen = new Map<string, number>();
  const retriesSeen = new Map<string, number>();
  const tally = (path: string, status: number): void => void seen.set(`${routeOf(path)} ${status}`, (seen.get(`${routeOf(path)} ${status}`) ?? 0) + 1);
  const tallyRetries = (upstream: string, n: number): void => void retriesSeen.set(upstream, (retriesSeen.get(upstream) ?? 0) + n);

  /** `send` through the gateway, counted in {@link seen}. */
  const req = async (method: string, path: string, body?: string): Promise<Reply> => {
    const r = await send(port, method, path, body);
    tally(path, r.status);
    return r;
  };
  const retries = async (upstream: string): Promise<number> => metric(await metricsText(gh), 'gatehouse_upstream_retries_total', { upstream }) ?? 0;

  beforeAll(async () => {
    const names = ['R', 'G1', 'G2', 'B502', 'G3', 'U', 'X', 'Y', 'H', 'G4', 'K1', 'K2', 'S', 'Z', 'T', 'A', 'B', 'C', 'D', 'W'];
    for (const n of names) backends[n] = await startBackend(n.toLowerCase());
    const dead = { cf: await deadPort(), sick: await deadPort(), brk: await deadPort() };
    dir = tempDir();
    const addr = Object.fromEntries(names.map((n) => [n, be(n).address]));
    writeConfig = (tinyPool) => void (configFile = dir.write('gh.yaml', config(addr, dead, tinyPool)));
    writeConfig(1);
    gh = await Daemon.start(configFile);
    port = gh.port('web');
  });

  afterAll(async () => {
    try {
      await gh?.[Symbol.asyncDispose]();
    } finally {
      for (const b of Object.values(backends)) await b[Symbol.asyncDispose]();
      dir?.[Symbol.dispose]();
    }
  });

  afterEach(async () => {
    // A test that failed half-way may have left requests held: reset them, so that the next
    // test starts clean (a test that passed left none).
    for (const b of Object.values(backends)) takeHeld(b, reset);
    // Every request of the test has ended: no exchange, backend count or connection left over.
    expect(await gh.idleLeftovers()).toEqual([]);
  });

  describe('retries per route', () => {
    test('retries: 1 — a GET whose backend resets before answering is retried on the other backend and succeeds', async () => {
      const [r, g] = [be('R'), be('G1')];
      r.act = reset;
      const N = 6;
      for (let i = 0; i < N; i++) {
        const res = await req('GET', `/rs/get-${i}`);
        expect(res.status).toBe(200);
        expect(res.body).toBe(`g1 GET /rs/get-${i} `);
      }
      // Every request reached G1 once; those that tried R first (all but at most one per shard)
      // were reset there and sent again.
      expect(g.paths('/rs/get')).toEqual(Array.from({ length: N }, (_, i) => `/rs/get-${i}`));
      const resetOnR = r.paths('/rs/get');
      expect(resetOnR.length).toBeGreaterThanOrEqual(N - 2);
      expect(new Set(resetOnR).size).toBe(resetOnR.length);
      expect(await retries('rs')).toBe(resetOnR.length);
      tallyRetries('rs', resetOnR.length);
    });

    test('a POST reset the same way gets 502 bad_gateway and is not sent to the other backend', async () => {
      const [r, g] = [be('R'), be('G1')];
      r.act = reset;
      const before = await retries('rs');
      let refused = 0;
      for (let i = 0; i < 4; i++) {
        const path = `/rs/post-${i}`;
        const res = await req('POST', path, `payload-${i}`);
        if (r.paths().includes(path)) {
          refused++;
          expect(res.status).toBe(502);
          expect(gatewayError(res)).toBe('bad_gateway');
          expect(g.paths()).not.toContain(path);
        } else {
          expect(res).toMatchObject({ status: 200, body: `g1 POST ${path} payload-${i}` });
        }
      }
      // Round robin alternates within a shard: at least one of four tried R first.
      expect(refused).toBeGreaterThanOrEqual(1);
      // Each POST reached R at most once (no retry on R either).
      expect(new Set(r.paths('/rs/post')).size).toBe(r.paths('/rs/post').length);
      expect(await retries('rs')).toBe(before);
    });

    test('a connect failure (nothing listening) is retried for any method, POST included', async () => {
      const g = be('G2');
      const N = 6;
      for (let i = 0; i < N; i++) {
        const res = await req('POST', `/cf/post-${i}`, `body-${i}`);
        expect(res).toMatchObject({ status: 200, body: `g2 POST /cf/post-${i} body-${i}` });
      }
      expect(g.paths('/cf')).toEqual(Array.from({ length: N }, (_, i) => `/cf/post-${i}`));
      // The dead backend was tried first by all but at most one request per shard.
      const n = await retries('cf');
      expect(n).toBeGreaterThanOrEqual(N - 2);
      expect(n).toBeLessThanOrEqual(N);
      tallyRetries('cf', n);
    });

    test('retryOn: [502] — a GET answered 502 by one backend is retried on the other; a POST gets that 502 as it is', async () => {
      const [bad, g] = [be('B502'), be('G3')];
      bad.act = (h, b) => answer(h, b, 502, 'b502 says no');
      const N = 6;
      for (let i = 0; i < N; i++) {
        const res = await req('GET', `/st/get-${i}`);
        expect(res).toMatchObject({ status: 200, body: `g3 GET /st/get-${i} ` });
      }
      expect(g.paths('/st/get')).toEqual(Array.from({ length: N }, (_, i) => `/st/get-${i}`));
      const on502 = bad.paths('/st/get');
      expect(on502.length).toBeGreaterThanOrEqual(N - 2);
      expect(await retries('st')).toBe(on502.length);
      tallyRetries('st', on502.length);

      // Not idempotent: the backend's own 502 goes to the client, body and all.
      let passed = 0;
      for (let i = 0; i < 4; i++) {
        const path = `/st/post-${i}`;
        const res = await req('POST', path, 'x');
        if (bad.paths().includes(path)) {
          passed++;
          expect(res).toMatchObject({ status: 502, body: 'b502 says no' });
          expect(g.paths()).not.toContain(path);
        } else expect(res).toMatchObject({ status: 200, body: `g3 POST ${path} x` });
      }
      expect(passed).toBeGreaterThanOrEqual(1);
      expect(await retries('st')).toBe(on502.length);
    });

    test('retryOn statuses with no other backend to try: the client gets the status the backend answered', async () => {
      // One backend: the retry finds no backend left (the one that failed is excluded). What the
      // client gets must still say what happened: a 503 stays a 503 (the backend is
      // unavailable), a 504 a 504, not a 502 bad_gateway.
      const u = be('U');
      u.act = (h, b) => answer(h, b, Number(h.path.slice('/one/'.length)), 'u says no');
      for (const status of [502, 503, 504]) {
        const res = await req('GET', `/one/${status}`);
        expect(res.status).toBe(status);
      }
      // Each reached U once; none was sent again (no backend left), so none counts as a retry.
      expect(u.paths()).toEqual(['/one/502', '/one/503', '/one/504']);
      expect(await retries('one')).toBe(0);
    });

    test('a half-open trial answered with a retryOn status closes the breaker (the backend answered), while the request is retried', async () => {
      const [x, y] = [be('X'), be('Y')];
      const breaker = async () => (await backendView(gh, 'trial', x.address))?.breaker;
      // A reset opens X's breaker (failureThreshold 1); the request itself is retried on Y.
      x.act = reset;
      let i = 0;
      while (x.hits.length === 0) {
        expect(++i).toBeLessThanOrEqual(6);
        expect(await req('GET', `/trial/${i}`)).toMatchObject({ status: 200, body: `y GET /trial/${i} ` });
      }
      tallyRetries('trial', 1);
      await gh.waitForLog((l) => l.msg === 'circuit breaker half-open: one trial connection allowed' && l.backend === x.address, 5_000);
      // Half-open: the one request that takes the permit is the trial. X answers it 502, which the
      // route retries on Y: the client gets Y's 200, and the trial's outcome is a success.
      x.act = (h, b) => answer(h, b, 502, 'x says 502');
      const seen = x.hits.length;
      while (x.hits.length === seen) {
        expect(++i).toBeLessThanOrEqual(20);
        expect(await req('GET', `/trial/${i}`)).toMatchObject({ status: 200, body: `y GET /trial/${i} ` });
      }
      tallyRetries('trial', 1);
      expect(x.hits.length).toBe(seen + 1);
      // Well within the trial timeout (connectTimeout + 1 s), after which a lost trial would get a new permit.
      await until(async () => (await breaker()) === 'closed', 1_500, 'X breaker closed');
      expect(await retries('trial')).toBe(2);
      expect(y.paths('/trial')).toHaveLength(i);
    });

    test('never a retry once a response byte reached the client: half a response then a reset resets the client', async () => {
      const [h, g] = [be('H'), be('G4')];
      // H sends the head and 10 of 100 body bytes, then waits (held) for the test to reset it.
      h.act = (hit, b) => {
        hit.res.writeHead(200, { 'content-length': '100' });
        hit.res.write('0123456789');
        hold(hit, b);
      };
      const before = await retries('half');
      let path = '';
      // A fresh connection each time, until one request goes to H first (within three: see the top).
      for (let i = 0; i < 6 && path === ''; i++) {
        const p = `/half/get-${i}`;
        const c = rawClient(port, `GET ${p} HTTP/1.1\r\nHost: gw\r\n\r\n`);
        await until(() => g.paths().includes(p) || h.held.length > 0, 5_000, `${p} reaching a backend`);
        if (h.held.length === 0) {
          await until(() => c.text().endsWith(`g4 GET ${p} `), 5_000, `the answer of G4 to ${p}`);
          tally(p, 200);
          c.sock.destroy();
          await c.ended;
          continue;
        }
        path = p;
        // The client has the head and the first bytes of the body...
        await until(() => c.text().endsWith('0123456789'), 5_000, 'the head and 10 body bytes at the client');
        expect(c.text()).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
        expect(c.text()).toMatch(/\r\ncontent-length: 100\r\n/i);
        tally(p, 200);
        // ...then the backend resets: the gateway cannot retry (bytes are out) and resets the client.
        expect(takeHeld(h, reset)).toBe(1);
        const end = await c.ended;
        expect(end.code).toBe('ECONNRESET');
        expect(c.text().endsWith('0123456789')).toBe(true);
      }
      expect(path).not.toBe('');
      expect(h.paths()).toEqual([path]);
      // The exchange is over (the state table is back to zero) and G4 never saw that request.
      expect(await gh.idleLeftovers()).toEqual([]);
      expect(g.paths()).not.toContain(path);
      expect(await retries('half')).toBe(before);
    });
  });

  test('retry budget: with many concurrent failing requests, retries stay within 20% of the requests in flight (at least 3)', async () => {
    // Both backends hold every request. Once all N are in flight (held), every held socket is
    // reset at once. Each failure asks the shard's budget (per listener per shard): it retries
    // while the exchanges retrying are fewer than max(3, floor(20% of its requests in flight)).
    // A retried request is held again on the other backend, so it stays in flight and keeps its
    // place in the budget; a refused one gets 502 and leaves, which only shrinks the budget. So
    // the retries of shard i are at most max(3, floor(0.2 * n_i)), n_i its requests in flight
    // when the resets came (read from /actors), and at least min(n_i, 3).
    const [k1, k2] = [be('K1'), be('K2')];
    k1.act = hold;
    k2.act = hold;
    const N = 48;
    const before = await retries('bud');
    const replies: Promise<Reply>[] = [];
    for (let i = 0; i < N; i++) replies.push(req('GET', `/bud/${i}`));
    await until(() => k1.held.length + k2.held.length === N, 10_000, `${N} requests held`);
    const listeners = findNodes(await gh.json<ActorNode>('/actors'), (n) => n.id === 'listener:web');
    const inFlight = listeners.map((l) => l.node.requestsInFlight as number);
    expect(inFlight.length).toBe(2);
    expect(inFlight[0]! + inFlight[1]!).toBe(N);

    const status = new Map<number, number>();
    for (const r of replies) void r.then((x) => status.set(x.status, (status.get(x.status) ?? 0) + 1), () => status.set(0, (status.get(0) ?? 0) + 1));
    takeHeld(k1, reset);
    takeHeld(k2, reset);
    // Every request either got its 502 or was retried (held again on the other backend).
    await until(() => (status.get(502) ?? 0) + k1.held.length + k2.held.length === N, 10_000, 'every failure answered or retried');
    const retried = k1.held.length + k2.held.length;
    const n = (await retries('bud')) - before;
    expect(n).toBe(retried);
    const max = inFlight.reduce((s, x) => s + Math.max(3, Math.floor(0.2 * x)), 0);
    const min = inFlight.reduce((s, x) => s + Math.min(3, x), 0);
    expect(n).toBeLessThanOrEqual(max);
    expect(n).toBeGreaterThanOrEqual(min);
    // Each retry went to the other backend: what K1 holds now came from K2's first round, and back.
    const firstTry = new Map<string, string>();
    for (const h of [...k1.hits, ...k2.hits].filter((x) => !k1.held.includes(x) && !k2.held.includes(x))) firstTry.set(h.path, k1.hits.includes(h) ? 'k1' : 'k2');
    for (const h of k1.held) expect(firstTry.get(h.path)).toBe('k2');
    for (const h of k2.held) expect(firstTry.get(h.path)).toBe('k1');

    takeHeld(k1, (h) => answer(h, k1));
    takeHeld(k2, (h) => answer(h, k2));
    const all = await Promise.all(replies);
    expect(all.filter((x) => x.status === 200).length).toBe(n);
    expect(all.filter((x) => x.status === 502).length).toBe(N - n);
    for (const x of all.filter((y) => y.status === 502)) expect(gatewayError(x)).toBe('bad_gateway');
    tallyRetries('bud', n);
  });

  test('retry budget spent: a retryOn status that may not be retried reaches the client as the backend sent it, body and headers', async () => {
    // As above, but the held requests are answered 503 with a body. Past the budget, a request
    // is not retried: its client gets the backend's own 503 (not a gateway-made one), and the
    // retried ones get 200 from the other backend.
    const [k1, k2] = [be('K1'), be('K2')];
    k1.act = hold;
    k2.act = hold;
    const N = 40;
    const before = await retries('bud');
    const replies: Promise<Reply>[] = [];
    for (let i = 0; i < N; i++) replies.push(req('GET', `/bst/${i}`));
    await until(() => k1.held.length + k2.held.length === N, 10_000, `${N} requests held`);
    const busy = (b: Backend) => (h: Hit) => answer(h, b, 503, `${b.name} busy`);
    takeHeld(k1, busy(k1));
    takeHeld(k2, busy(k2));
    const done = new Set<number>();
    replies.forEach((r, i) => void r.then(() => done.add(i), () => done.add(i)));
    await until(() => done.size + k1.held.length + k2.held.length === N, 10_000, 'every 503 passed on or retried');
    const n = (await retries('bud')) - before;
    expect(n).toBe(k1.held.length + k2.held.length);
    expect(n).toBeGreaterThanOrEqual(6); // at least 3 per shard: min(3, its requests in flight)
    expect(n).toBeLessThan(N);
    takeHeld(k1, (h) => answer(h, k1));
    takeHeld(k2, (h) => answer(h, k2));
    const all = await Promise.all(replies);
    expect(all.filter((x) => x.status === 200).length).toBe(n);
    const refused = all.filter((x) => x.status === 503);
    expect(refused.length).toBe(N - n);
    for (const x of refused) {
      expect(x.body).toMatch(/^k[12] busy$/);
      expect(x.headers['content-type']).toBe('text/plain');
    }
    tallyRetries('bud', n);
  });

  describe('timeouts', () => {
    test('route timeout: a backend that never answers gets 504 timeout, and its pooled socket is not reused', async () => {
      const s = be('S');
      s.act = (h, b) => (h.path === '/slow/hang' ? hold(h, b) : answer(h, b));
      // One client connection: every request on one shard, so on one pool.
      const client = new Client(`http://127.0.0.1:${port}`);
      try {
        const get = async (path: string): Promise<{ status: number; body: string; ms: number; id: string }> => {
          const t0 = performance.now();
          const r = await client.request({ path, method: 'GET' });
          const body = await r.body.text();
          tally(path, r.statusCode);
          return { status: r.statusCode, body, ms: performance.now() - t0, id: String(r.headers['x-request-id']) };
        };
        expect(await get('/slow/ok-1')).toMatchObject({ status: 200, body: 's GET /slow/ok-1 ' });
        const hung = await get('/slow/hang');
        expect(hung.status).toBe(504);
        expect(JSON.parse(hung.body)).toEqual({ error: 'timeout', requestId: hung.id });
        expect(hung.ms).toBeGreaterThanOrEqual(280);
        expect(await get('/slow/ok-2')).toMatchObject({ status: 200, body: 's GET /slow/ok-2 ' });
        const conn = (p: string) => s.hits.find((h) => h.path === p)!.conn;
        // The hung request went on the warm socket (LIFO reuse); the gateway closed it at the
        // timeout, and the next request needed a new connection.
        expect(conn('/slow/hang')).toBe(conn('/slow/ok-1'));
        expect(conn('/slow/ok-2')).not.toBe(conn('/slow/hang'));
        await until(() => s.closed.has(conn('/slow/hang')), 5_000, 'the timed-out socket closed at the backend');
        expect(s.closed.has(conn('/slow/ok-2'))).toBe(false);
      } finally {
        await client.close();
      }
      s.held.splice(0);
    });

    test('route idleTimeout: a response whose body stalls is cut, the client connection reset after the head', async () => {
      const s = be('S');
      s.act = (h, b) => {
        h.res.writeHead(200, { 'content-length': '1000' });
        h.res.write('partial');
        hold(h, b);
      };
      const c = rawClient(port, 'GET /slow/stall HTTP/1.1\r\nHost: gw\r\n\r\n');
      await until(() => c.text().endsWith('partial'), 5_000, 'the head and the first body bytes');
      const headAt = performance.now();
      expect(c.text()).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
      tally('/slow/stall', 200);
      const end = await c.ended;
      expect(end.code).toBe('ECONNRESET');
      expect(end.at - headAt).toBeGreaterThanOrEqual(200);
      expect(c.text().endsWith('partial')).toBe(true);
      const stalled = s.held.splice(0);
      expect(stalled.length).toBe(1);
      await until(() => s.closed.has(stalled[0]!.conn), 5_000, 'the stalled socket closed at the backend');
    });
  });

  describe('gateway answers', () => {
    test('an invalid response is 502 bad_gateway, and that connection is closed', async () => {
      const z = be('Z');
      z.act = (h) => {
        if (h.path === '/bad/status') h.req.socket.write('HTTP/1.1 2x0 Nope\r\ncontent-length: 0\r\n\r\n');
        else h.req.socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nok');
      };
      for (const path of ['/bad/status', '/bad/two-lengths']) {
        const res = await req('GET', path);
        expect(res.status).toBe(502);
        expect(gatewayError(res)).toBe('bad_gateway');
        const conn = z.hits.find((h) => h.path === path)!.conn;
        await until(() => z.closed.has(conn), 5_000, `the connection of ${path} closed`);
      }
      expect(z.paths()).toEqual(['/bad/status', '/bad/two-lengths']);
    });

    test('503 unavailable when the only backend is marked unhealthy by its health checks', async () => {
      await until(async () => (await backendView(gh, 'sick', (await upstreamAddress('sick'))))?.healthy === false, 5_000, 'the dead backend unhealthy');
      const res = await req('GET', '/sick/x');
      expect(res.status).toBe(503);
      expect(gatewayError(res)).toBe('unavailable');
    });

    test('503 unavailable when the breaker of the only backend is open', async () => {
      const address = await upstreamAddress('brk');
      // Two failed connects (502 each, nothing to retry on) open it, counted across shards.
      let tries = 0;
      while ((await backendView(gh, 'brk', address))?.breaker !== 'open') {
        expect(++tries).toBeLessThanOrEqual(20);
        const res = await req('GET', `/brk/${tries}`);
        expect([502, 503]).toContain(res.status);
        expect(gatewayError(res)).toBe(res.status === 502 ? 'bad_gateway' : 'unavailable');
      }
      expect(tries).toBeGreaterThanOrEqual(2);
      for (let i = 0; i < 3; i++) {
        const res = await req('GET', `/brk/open-${i}`);
        expect(res.status).toBe(503);
        expect(gatewayError(res)).toBe('unavailable');
      }
    });

    test('503 unavailable when the pool is exhausted: maxConnections 1, a slow backend, the queue wait (connectTimeout) passed; a reload raising maxConnections applies to the open pools', async () => {
      // Each shard has its own pool of one socket toward T. The first request of a shard takes
      // it and is held; the others of that shard wait in the pool's queue (maxQueue 1,024 is not
      // reachable here: it is not configurable) until connectTimeout (300 ms), then get 503.
      const t = be('T');
      t.act = hold;
      const N = 6;
      const replies = Array.from({ length: N }, (_, i) => req('GET', `/tiny/${i}`));
      const got: Reply[] = [];
      for (const r of replies) void r.then((x) => got.push(x));
      await until(() => got.length + t.held.length === N, 10_000, 'every request held or answered');
      const held = t.held.length;
      expect(held).toBeGreaterThanOrEqual(1);
      expect(held).toBeLessThanOrEqual(2); // one per shard at most
      expect(got.length).toBe(N - held);
      for (const x of got) {
        expect(x.status).toBe(503);
        expect(gatewayError(x)).toBe('unavailable');
      }
      // Never more than one connection per shard to T.
      expect(t.conns).toBeLessThanOrEqual(2);
      takeHeld(t, (h) => answer(h, t));
      const all = await Promise.all(replies);
      expect(all.filter((x) => x.status === 200).length).toBe(held);

      // The pools that just served (and keep a warm socket to T) take the reloaded limit: the
      // same burst now reaches T whole.
      writeConfig(8);
      const res = await gh.admin('/reload', { method: 'POST' });
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ changed: ['upstream:tiny'], added: [], removed: [] });
      const again = Array.from({ length: N }, (_, i) => req('GET', `/tiny/again-${i}`));
      const early: Reply[] = [];
      for (const r of again) void r.then((x) => early.push(x));
      await until(() => t.held.length + early.length === N, 10_000, 'every request held or answered');
      expect(early).toEqual([]);
      expect(t.held.length).toBe(N);
      takeHeld(t, (h) => answer(h, t));
      for (const x of await Promise.all(again)) expect(x).toMatchObject({ status: 200 });
    });
  });

  test('a request head larger than the 64 KiB kept for a resend (maxHeaderSize 256KiB) is sent whole', async () => {
    // The gateway keeps what it sent of a request (up to 64 KiB) to send it again; the head
    // itself must go upstream whatever its size, on a fresh socket as on a reused one.
    const w = be('W');
    const wport = gh.port('wide');
    const big = 'v'.repeat(100_000);
    for (let i = 0; i < 3; i++) {
      const res = await new Promise<Reply>((resolve, reject) => {
        const r = http.request({ host: '127.0.0.1', port: wport, path: `/w/${i}`, agent: false, maxHeaderSize: 1024 * 1024, headers: { 'x-big': big } }, (m) => {
          let text = '';
          m.setEncoding('latin1');
          m.on('data', (d: string) => (text += d));
          m.on('end', () => resolve({ status: m.statusCode!, headers: m.headers, body: text }));
        });
        r.on('error', reject);
        r.end();
      });
      expect(res).toMatchObject({ status: 200, body: `w GET /w/${i} ` });
      expect(w.hits.at(-1)!.req.headers['x-big']).toBe(big);
    }
    const m = await metricsText(gh);
    expect(metric(m, 'gatehouse_http_requests_total', { listener: 'wide', route: 'wide', code: '200' })).toBe(3);
  });

  describe('balancers shared with L4', () => {
    test('round_robin spreads the requests of a connection evenly over the backends', async () => {
      const [a, b] = [be('A'), be('B')];
      const client = new Client(`http://127.0.0.1:${port}`);
      try {
        for (let i = 0; i < 10; i++) {
          const r = await client.request({ path: `/rr/${i}`, method: 'GET' });
          await r.body.text();
          tally(`/rr/${i}`, r.statusCode);
          expect(r.statusCode).toBe(200);
        }
      } finally {
        await client.close();
      }
      // One connection, one shard: strictly alternating.
      expect(a.paths('/rr').length).toBe(5);
      expect(b.paths('/rr').length).toBe(5);
      const order = Array.from({ length: 10 }, (_, i) => (a.paths().includes(`/rr/${i}`) ? 'a' : 'b'));
      for (let i = 1; i < 10; i++) expect(order[i]).not.toBe(order[i - 1]);
    });

    test('least_connections sends new requests to the backend with fewer requests in flight', async () => {
      const [c, d] = [be('C'), be('D')];
      for (const x of [c, d]) x.act = (h, b) => (h.path.startsWith('/lc/hold') ? hold(h, b) : answer(h, b));
      const first = req('GET', '/lc/hold-1');
      await until(() => c.held.length + d.held.length === 1, 5_000, 'the first held');
      const [busy, free] = c.held.length === 1 ? [c, d] : [d, c];
      // One in flight on `busy` (counted across shards): every new request goes to `free`,
      // whichever shard takes it (round robin would send half of them to `busy`).
      for (let i = 0; i < 6; i++) expect((await req('GET', `/lc/fast-${i}`)).status).toBe(200);
      expect(free.paths('/lc/fast')).toHaveLength(6);
      expect(busy.paths('/lc/fast')).toHaveLength(0);
      // A second long request goes to `free` too; then 1 and 1, and the tie is broken either way.
      const second = req('GET', '/lc/hold-2');
      await until(() => free.held.length === 1, 5_000, 'the second held on the other backend');
      expect(busy.held.length).toBe(1);
      takeHeld(c, (h) => answer(h, c));
      takeHeld(d, (h) => answer(h, d));
      expect((await first).status).toBe(200);
      expect((await second).status).toBe(200);
    });
  });

  test('metrics: requests_total per route and code, the duration histogram _count and retries_total match what happened', async () => {
    // Runs last: everything the tests above saw, summed.
    const text = await metricsText(gh);
    const routes = new Set([...seen.keys()].map((k) => k.split(' ')[0]!));
    expect(routes.size).toBeGreaterThanOrEqual(10);
    for (const [key, n] of seen) {
      const [route, code] = key.split(' ') as [string, string];
      expect({ key, n: metric(text, 'gatehouse_http_requests_total', { listener: 'web', route, code }) }).toEqual({ key, n });
    }
    for (const route of routes) {
      const total = [...seen].filter(([k]) => k.startsWith(`${route} `)).reduce((s, [, n]) => s + n, 0);
      expect({ route, n: metric(text, 'gatehouse_http_request_duration_seconds_count', { listener: 'web', route }) }).toEqual({ route, n: total });
      expect(metric(text, 'gatehouse_http_request_duration_seconds_bucket', { listener: 'web', route, le: '+Inf' })).toBe(total);
    }
    // No series for a code or route that nothing produced.
    const series = text.split('\n').filter((l) => l.startsWith('gatehouse_http_requests_total{listener="web"'));
    expect(series.length).toBe(seen.size);
    for (const [upstream, n] of retriesSeen) expect({ upstream, n: metric(text, 'gatehouse_upstream_retries_total', { upstream }) }).toEqual({ upstream, n });
    for (const upstream of ['one', 'sick', 'brk', 'tiny', 'rr', 'lc', 'slow', 'bad', 'half']) expect(metric(text, 'gatehouse_upstream_retries_total', { upstream }) ?? 0).toBe(0);
  });

  /** The one backend address of `upstream`, as `/upstreams` lists it. */
  async function upstreamAddress(upstream: string): Promise<string> {
    const body = await gh.json<{ upstreams: { name: string; backends: { address: string }[] }[] }>('/upstreams');
    return body.upstreams.find((u) => u.name === upstream)!.backends[0]!.address;
  }
});
