/**
 * Zero-drop hot reload, on the real daemon at workers: 2 with an http listener (with a
 * `websocket: true` route) and a tcp listener in front of real backends. While keep-alive
 * clients, fresh-connection clients, open WebSockets and open TCP streams run, 20 reloads
 * (`POST /reload` and SIGHUP, alternating) switch between two configs: a route's upstream and
 * its header middleware change, a route comes and goes, a backend is added and removed on an
 * http upstream and on the tcp one. Nothing may fail: every response is a 200 from the backend
 * the route in force names (never a mix of two configs), no keep-alive connection is closed or
 * opened again, every WebSocket and TCP stream is still open and echoing at the end, the
 * reloaded routes answer right after each reload, and the actor counts are back to where they
 * started.
 */
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
import { afterAll, beforeAll, describe, expect, onTestFinished, test } from 'vitest';
import { Client } from 'undici';
import { WebSocket, WebSocketServer } from 'ws';
import { Daemon, metric, tempDir, until } from '../helpers/daemon.ts';
import { connect, roundTrip, startEchoServer } from '../helpers/net.ts';

const RELOADS = 20;
/** Per load loop: round trips at most (the loops also stop when the reloads are done). */
const MAX_PER_LOOP = 4_000;
/** Requests every keep-alive client must make between two reloads, so that each reload meets traffic. */
const BETWEEN = 5;

type Version = 'A' | 'B';

/** How long a backend holds a request whose path has `/slow`: such requests are in flight across reloads. */
const SLOW_MS = 150;

/** An http backend answering `NAME PATH X-MW` (keep-alive; `SLOW_MS` late for a `/slow` path), whose upgrades become WebSocket echoes. */
async function httpBackend(name: string): Promise<{ port: number; wss: WebSocketServer; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    req.resume();
    const answer = (): void => void res.end(`${name} ${req.url} ${req.headers['x-mw'] ?? '-'}`);
    req.on('end', () => (req.url?.includes('/slow') ? setTimeout(answer, SLOW_MS) : answer()));
  });
  server.keepAliveTimeout = 30_000;
  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    wss.handleUpgrade(req, socket, head, (ws) => ws.on('message', (data, binary) => ws.send(data, { binary })));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as net.AddressInfo).port,
    wss,
    close: async () => {
      for (const c of wss.clients) c.terminate();
      wss.close();
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}

/** `gatehouse_actors` by type. */
async function actorCounts(gh: Daemon): Promise<Record<string, number>> {
  const text = await (await gh.admin('/metrics')).text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^gatehouse_actors\{type="([^"]+)"\} (\S+)$/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

/** What `GET /a/...` answers under each config: its backend and the header its middleware sets. */
const A_ROUTE: Record<Version, RegExp> = { A: /^x \/a\/\S+ A$/, B: /^y \/a\/\S+ B$/ };
/** `GET /c/...`: upstream ux, x alone in A, x or z in B; no header set. */
const C_ROUTE = /^[xz] \/c\/\S+ -$/;

/** Checks one load response; returns what is wrong with it, or undefined. */
function wrong(path: string, status: number, body: string): string | undefined {
  if (status !== 200) return `${path}: ${status} ${body}`;
  const ok = path.startsWith('/a/') ? A_ROUTE.A.test(body) || A_ROUTE.B.test(body) : C_ROUTE.test(body);
  return ok ? undefined : `${path}: unexpected body ${JSON.stringify(body)}`;
}

/** GET on a new connection (closed after the response). */
function freshGet(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false, signal: AbortSignal.timeout(5_000) }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

describe('hot reload under load', () => {
  let x: Awaited<ReturnType<typeof httpBackend>>;
  let y: Awaited<ReturnType<typeof httpBackend>>;
  let z: Awaited<ReturnType<typeof httpBackend>>;
  let e1: Awaited<ReturnType<typeof startEchoServer>>;
  let e2: Awaited<ReturnType<typeof startEchoServer>>;
  let dir: ReturnType<typeof tempDir>;

  const config = (v: Version): string => `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2, shutdownTimeout: 5s }
upstreams:
  - { name: ux, backends: [ "127.0.0.1:${x.port}"${v === 'B' ? `, "127.0.0.1:${z.port}"` : ''} ]${v === 'B' ? ', pool: { maxConnections: 2 }' : ''} }
  - { name: uy, backends: [ "127.0.0.1:${y.port}" ] }
  - { name: echo, backends: [ "127.0.0.1:${e1.port}"${v === 'B' ? `, "127.0.0.1:${e2.port}"` : ''} ] }
listeners:
  - name: web
    protocol: http
    listen: 127.0.0.1:0
    routes:
      - { name: ws, match: { pathPrefix: /ws }, upstream: ux, websocket: true }
      - { name: a, match: { pathPrefix: /a }, upstream: ${v === 'A' ? 'ux' : 'uy'}, headers: { request: { set: { x-mw: "${v}" } } } }
      - { name: c, match: { pathPrefix: /c }, upstream: ux }
${v === 'B' ? '      - { name: b, match: { pathPrefix: /b }, upstream: uy }\n' : ''}  - { name: tcp, protocol: tcp, listen: 127.0.0.1:0, upstream: echo }
`;

  beforeAll(async () => {
    [x, y, z] = await Promise.all([httpBackend('x'), httpBackend('y'), httpBackend('z')]);
    [e1, e2] = await Promise.all([startEchoServer(), startEchoServer()]);
    dir = tempDir();
  });

  afterAll(async () => {
    await Promise.all([x, y, z].map((b) => b?.close()));
    await Promise.all([e1, e2].map((e) => e?.[Symbol.asyncDispose]()));
    dir?.[Symbol.dispose]();
  });

  test('20 reloads under keep-alive, fresh-connection, WebSocket and TCP load drop nothing', async () => {
    const file = dir.write('gh.yaml', config('A'));
    await using gh = await Daemon.start(file);
    const web = gh.port('web');
    const tcp = gh.port('tcp');
    const origin = `http://127.0.0.1:${web}`;
    const before = await actorCounts(gh);

    const errors: string[] = [];
    let stop = false;
    // If an assertion fails, the loops stop before the clients are torn down.
    onTestFinished(() => void (stop = true));

    // Keep-alive clients: one connection each, which must never close or be opened again.
    const connects = new Map<Client, number>();
    const keptClient = (label: string): Client => {
      const c = new Client(origin, { pipelining: 1 });
      onTestFinished(() => c.destroy());
      connects.set(c, 0);
      c.on('connect', () => connects.set(c, connects.get(c)! + 1));
      c.on('disconnect', (_o, _t, err) => {
        if (!stop) errors.push(`${label} disconnected: ${err?.message}`);
      });
      return c;
    };
    const kaClients = Array.from({ length: 3 }, (_, i) => keptClient(`keep-alive client ${i}`));
    const kaDone = kaClients.map(() => 0);
    const keepAlive = kaClients.map(async (c, i) => {
      for (let n = 0; n < MAX_PER_LOOP && !stop; n++) {
        const path = `/${n % 2 ? 'a' : 'c'}/ka${i}-${n}`;
        try {
          const r = await c.request({ path, method: 'GET', headersTimeout: 5_000, bodyTimeout: 5_000 });
          const problem = wrong(path, r.statusCode, await r.body.text());
          if (problem) errors.push(`keep-alive: ${problem}`);
        } catch (err) {
          errors.push(`keep-alive ${path}: ${(err as Error).message}`);
        }
        kaDone[i]!++;
      }
    });

    // Slow requests, held by the backends, so that some are in flight at every reload (on a
    // backend being removed too): each must still get its answer.
    const slowClients = Array.from({ length: 2 }, (_, i) => keptClient(`slow client ${i}`));
    let slowDone = 0;
    const slow = slowClients.map(async (c, i) => {
      for (let n = 0; n < MAX_PER_LOOP && !stop; n++) {
        const path = `/${n % 2 ? 'a' : 'c'}/slow${i}-${n}`;
        try {
          const r = await c.request({ path, method: 'GET', headersTimeout: 5_000, bodyTimeout: 5_000 });
          const problem = wrong(path, r.statusCode, await r.body.text());
          if (problem) errors.push(`slow: ${problem}`);
        } catch (err) {
          errors.push(`slow ${path}: ${(err as Error).message}`);
        }
        slowDone++;
      }
    });

    // Fresh-connection clients: a new connection per request.
    let freshDone = 0;
    const fresh = Array.from({ length: 2 }, async (_, i) => {
      for (let n = 0; n < MAX_PER_LOOP && !stop; n++) {
        const path = `/${n % 2 ? 'c' : 'a'}/f${i}-${n}`;
        try {
          const r = await freshGet(web, path);
          const problem = wrong(path, r.status, r.body);
          if (problem) errors.push(`fresh: ${problem}`);
        } catch (err) {
          errors.push(`fresh ${path}: ${(err as Error).message}`);
        }
        freshDone++;
      }
    });

    // WebSockets through the websocket route, exchanging messages until the end.
    const sockets = await Promise.all(
      Array.from({ length: 3 }, async (_, i) => {
        const ws = new WebSocket(`ws://127.0.0.1:${web}/ws/${i}`);
        onTestFinished(() => ws.terminate());
        ws.on('error', (err) => errors.push(`websocket ${i}: ${err.message}`));
        ws.on('close', (code) => {
          if (!stop) errors.push(`websocket ${i} closed (${code}) during the reloads`);
        });
        await once(ws, 'open');
        return ws;
      }),
    );
    const wsEcho = (ws: WebSocket, text: string): Promise<string> =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no echo of ${text} within 5 s`)), 5_000);
        ws.once('message', (d) => {
          clearTimeout(timer);
          resolve(String(d));
        });
        ws.send(text);
      });
    const wsLoops = sockets.map(async (ws, i) => {
      for (let n = 0; n < MAX_PER_LOOP && !stop; n++) {
        const text = `ws${i}-${n}`;
        const got = await wsEcho(ws, text).catch((err: Error) => err.message);
        if (got !== text) errors.push(`websocket ${i}: sent ${text}, got ${got}`);
      }
    });

    // TCP streams through the tcp listener, echoing until the end.
    const streams = await Promise.all(
      Array.from({ length: 3 }, async (_, i) => {
        const s = await connect(tcp);
        onTestFinished(() => s.close());
        s.socket.on('close', () => {
          if (!stop) errors.push(`tcp stream ${i} closed during the reloads`);
        });
        return s;
      }),
    );
    const tcpLoops = streams.map(async (s, i) => {
      for (let n = 0; n < MAX_PER_LOOP && !stop; n++) {
        const text = `tcp${i}-${n}|`;
        const got = await s.send(text).catch((err: Error) => err.message);
        if (got !== text) errors.push(`tcp stream ${i}: sent ${text}, got ${got}`);
      }
    });

    // The reloads, each awaited, each checked by requests made right after it.
    const reloaded = (): number => gh.logs.filter((l) => l.msg === 'config reloaded').length;
    const checks: string[] = [];
    const checker = keptClient('checking client');
    for (let r = 1; r <= RELOADS; r++) {
      const v: Version = r % 2 === 1 ? 'B' : 'A';
      const seen = kaDone.slice();
      await until(() => kaDone.every((d, i) => d >= seen[i]! + BETWEEN) || stop, 10_000, 'keep-alive traffic between reloads');
      writeFileSync(file, config(v));
      if (r % 2 === 1) {
        const res = await gh.admin('/reload', { method: 'POST' });
        const body = (await res.json()) as { changed?: string[] };
        if (res.status !== 200) throw new Error(`reload ${r} answered ${res.status}: ${JSON.stringify(body)}`);
        expect(body.changed).toEqual(expect.arrayContaining(['listener:web', 'upstream:ux', 'upstream:echo']));
      } else {
        const from = gh.logs.length;
        gh.child.kill('SIGHUP');
        const done = await gh.waitForLog((l) => gh.logs.indexOf(l) >= from && (l.msg === 'config reloaded' || (l.level >= 50 && l.msg.startsWith('reload '))));
        if (done.msg !== 'config reloaded') throw new Error(`reload ${r} (SIGHUP) failed: ${JSON.stringify(done)}`);
      }
      // Right after the answer, on fresh connections (either shard) and on a kept one, the new routes answer.
      const onFresh = (p: string): Promise<{ status: number; body: string }> => freshGet(web, p);
      const onKept = async (p: string): Promise<{ status: number; body: string }> => {
        const res = await checker.request({ path: p, method: 'GET' });
        return { status: res.statusCode, body: await res.body.text() };
      };
      for (const get of [onFresh, onFresh, onFresh, onKept]) {
        const a = await get(`/a/check${r}`);
        if (a.status !== 200 || !A_ROUTE[v].test(a.body)) checks.push(`reload ${r} (${v}): /a answered ${a.status} ${a.body}`);
        const b = await get(`/b/check${r}`);
        const bOk = v === 'B' ? b.status === 200 && /^y \/b\//.test(b.body) : b.status === 404 && b.body.includes('no_route');
        if (!bOk) checks.push(`reload ${r} (${v}): /b answered ${b.status} ${b.body}`);
      }
      const echoed = await roundTrip(tcp, `new tcp ${r}`).catch((err: Error) => err.message);
      if (echoed !== `new tcp ${r}`) checks.push(`reload ${r} (${v}): a new tcp connection got ${echoed}`);
    }

    // Every stream is still open and echoing once the reloads are done.
    stop = true;
    await Promise.all([...keepAlive, ...slow, ...fresh, ...wsLoops, ...tcpLoops]);
    for (const [i, ws] of sockets.entries()) expect([ws.readyState, await wsEcho(ws, `last${i}`)]).toEqual([WebSocket.OPEN, `last${i}`]);
    for (const [i, s] of streams.entries()) expect(await s.send(`last${i}`)).toBe(`last${i}`);

    expect(errors).toEqual([]);
    expect(checks).toEqual([]);
    // One connection per keep-alive client for the whole run: none was closed by a reload.
    expect([...connects.values()]).toEqual([1, 1, 1, 1, 1, 1]);
    expect(kaDone.every((d) => d >= RELOADS * BETWEEN)).toBe(true);
    expect(freshDone).toBeGreaterThan(RELOADS);
    // The listeners never rebound: one `listener ready` each, on the same ports.
    expect(gh.logs.filter((l) => l.msg === 'listener ready').map((l) => l.listener).sort()).toEqual(['tcp', 'web']);
    expect(reloaded()).toBe(RELOADS);

    // Everything closed: the actor counts are back to where they started.
    await Promise.all([...kaClients, ...slowClients].map((c) => c.close()));
    await checker.close();
    await Promise.all(sockets.map((ws) => (ws.close(1000), once(ws, 'close'))));
    await Promise.all(streams.map((s) => s.close()));
    expect(await gh.idleLeftovers()).toEqual([]);
    await until(async () => isDeepStrictEqual(await actorCounts(gh), before), 5_000, 'actor counts back to the start');
    expect(await actorCounts(gh)).toEqual(before);
    expect(metric(await (await gh.admin('/metrics')).text(), 'gatehouse_connections_active', { listener: 'web' }) ?? 0).toBe(0);
    expect(await gh.stop()).toBe(0);
  }, 60_000);
});
