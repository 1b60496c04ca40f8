import net from 'node:net';
import http from 'node:http';
import { once } from 'node:events';
import { until } from './daemon.ts';

/**
 * An echo backend on 127.0.0.1 that can be killed (its server closed and every socket destroyed,
 * as a crashed process would leave it) and started again on the same port.
 *
 * `accepted` counts every connection (tcp health probes included); `served` only those that sent
 * bytes, which is client traffic (a tcp probe connects and closes without writing).
 *
 * @example
 * await using echo = await startKillableEcho();
 * await echo.kill();      // connects to echo.port are refused now
 * await echo.restart();   // and accepted again, on the same port
 */
export interface KillableEcho {
  readonly port: number;
  /** `127.0.0.1:PORT`, as the config and the metric labels spell it. */
  readonly address: string;
  readonly accepted: number;
  readonly served: number;
  readonly sockets: ReadonlySet<net.Socket>;
  readonly running: boolean;
  /** Closes the server and destroys every open socket; resolves with how many were open. */
  kill(): Promise<number>;
  /** Listens again on the same port. */
  restart(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Starts a {@link KillableEcho} on 127.0.0.1, port 0. */
export async function startKillableEcho(): Promise<KillableEcho> {
  let server: net.Server | undefined;
  const sockets = new Set<net.Socket>();
  let port = 0;
  let accepted = 0;
  let served = 0;
  const create = (): net.Server =>
    net.createServer({ allowHalfOpen: true }, (c) => {
      accepted++;
      sockets.add(c);
      c.on('close', () => sockets.delete(c));
      c.on('error', () => {});
      c.once('data', () => served++);
      c.pipe(c);
    });
  const listen = async (): Promise<void> => {
    // The port is free again once the previous server closed, but an outgoing connection may have
    // been given it as its ephemeral port meanwhile (EADDRINUSE): try again, with a deadline.
    const s = (await until(
      () =>
        new Promise<net.Server | undefined>((resolve, reject) => {
          const attempt = create();
          attempt.once('error', (err: NodeJS.ErrnoException) => (err.code === 'EADDRINUSE' && port !== 0 ? resolve(undefined) : reject(err)));
          attempt.listen(port, '127.0.0.1', () => resolve(attempt));
        }),
      5_000,
      `listen on 127.0.0.1:${port}`,
    ))!;
    server = s;
    port = (s.address() as net.AddressInfo).port;
  };
  const kill = async (): Promise<number> => {
    const s = server;
    if (!s) return 0;
    server = undefined;
    s.close();
    const n = sockets.size;
    for (const c of sockets) c.destroy();
    await once(s, 'close');
    return n;
  };
  await listen();
  return {
    get port() {
      return port;
    },
    get address() {
      return `127.0.0.1:${port}`;
    },
    get accepted() {
      return accepted;
    },
    get served() {
      return served;
    },
    sockets,
    get running() {
      return server !== undefined;
    },
    kill,
    restart: async () => {
      if (server) throw new Error(`backend 127.0.0.1:${port} is running`);
      await listen();
    },
    [Symbol.asyncDispose]: async () => void (await kill()),
  };
}

/**
 * A node:http backend whose `GET /healthz` answers `health` (settable), and whose every other
 * path answers 200 with its `name`. Probe requests and traffic are counted apart.
 *
 * @example
 * await using h = await startHttpBackend('h1', 500);
 * h.health = 200; // the next probe passes
 */
export interface HttpBackend {
  readonly port: number;
  readonly address: string;
  health: number;
  /** Requests to /healthz, with their user-agent. */
  readonly probes: { userAgent: string | undefined; method: string | undefined }[];
  /** Requests to any other path. */
  readonly served: number;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Starts an {@link HttpBackend} on 127.0.0.1, port 0. */
export async function startHttpBackend(name: string, health = 200): Promise<HttpBackend> {
  const probes: HttpBackend['probes'] = [];
  let served = 0;
  const b = {
    health,
    probes,
    get served() {
      return served;
    },
  } as HttpBackend & { health: number };
  const server = http.createServer((req, res) => {
    if (req.url === '/healthz') {
      probes.push({ userAgent: req.headers['user-agent'], method: req.method });
      res.statusCode = b.health;
      res.end(String(b.health));
      return;
    }
    served++;
    res.setHeader('connection', 'close');
    res.end(name);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  return Object.assign(b, {
    port,
    address: `127.0.0.1:${port}`,
    [Symbol.asyncDispose]: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  });
}

/**
 * `GET path` through a TCP listener (a fresh connection each time); resolves with status and body.
 *
 * @example
 * expect(await httpGet(gh.port('tcp-in'), '/work')).toEqual({ status: 200, body: 'h1' });
 */
export async function httpGet(port: number, path: string, timeoutMs = 5_000): Promise<{ status: number; body: string }> {
  const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false, signal: AbortSignal.timeout(timeoutMs) }, resolve);
    req.on('error', reject);
  });
  let body = '';
  res.setEncoding('utf8');
  for await (const chunk of res) body += chunk;
  return { status: res.statusCode ?? 0, body };
}

/**
 * `n` killable echo backends, disposed together.
 *
 * @example
 * await using backends = await startBackends(3);
 * const [a, b, c] = [...backends] as [KillableEcho, KillableEcho, KillableEcho];
 */
export async function startBackends(n: number): Promise<KillableEcho[] & AsyncDisposable> {
  const list = await Promise.all(Array.from({ length: n }, () => startKillableEcho()));
  return Object.assign(list, { [Symbol.asyncDispose]: async () => void (await Promise.all(list.map((b) => b[Symbol.asyncDispose]()))) });
}
