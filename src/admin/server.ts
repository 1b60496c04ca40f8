import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Logger } from 'pino';
import { isLoopbackHost } from '../auth/policy.ts';
import { ListenError } from '../errors.ts';
import { AdminHttpError, bearerChecker, foreignRequest, parseTarget, sendError } from './http.ts';
import { createMetrics } from './metrics.ts';
import type { AdminMetrics } from './metrics.ts';
import { allowedMethods, builtinRoutes, matchRoute } from './routes.ts';
import type { AdminRoute, HttpMethod } from './routes.ts';
import { SseHub } from './sse.ts';
import type { AdminBackend } from './types.ts';

/** Options of {@link startAdminServer}. */
export interface AdminServerOptions {
  host: string;
  /** 0 picks a free port; read it back from `address.port`. */
  port: number;
  /**
   * When set, every route but /healthz and /readyz needs `Authorization: Bearer <token>`. A
   * function is read per request, so a reloaded token applies at once (rotation without restart).
   */
  token?: string | (() => string | undefined);
  backend: AdminBackend;
  log: Logger;
  /** Metrics owned by the caller (who may register more in its registry). Created and closed here when absent. */
  metrics?: AdminMetrics;
  /** More routes (the service registry's `/v1/services`, ...), matched after the built-in ones. */
  routes?: AdminRoute[];
  /** SSE heartbeat period; 15 s by default. */
  sseHeartbeatMs?: number;
  /** How long `close()` lets in-flight requests finish before cutting them; 2 s by default. */
  closeTimeoutMs?: number;
}

/** `listening` until `close()`/`destroy()`, `closing` while connections finish, then `closed`. */
export type AdminServerStatus = 'listening' | 'closing' | 'closed';

/**
 * A running admin server.
 *
 * @example
 * await using admin = await startAdminServer({ host: '127.0.0.1', port: 0, backend, log });
 * const res = await fetch(`http://127.0.0.1:${admin.address.port}/healthz`);
 */
export interface AdminServer {
  /** Where the server listens (the real port when started on port 0). */
  readonly address: { host: string; port: number };
  readonly metrics: AdminMetrics;
  readonly status: AdminServerStatus;
  /** Open SSE streams. */
  readonly sseStreams: number;
  /** Stops accepting, ends SSE streams, lets in-flight requests finish (up to `closeTimeoutMs`), then closes every connection. Idempotent. */
  close(): Promise<void>;
  /** Closes every connection now. Idempotent; joins a `close()` in progress. */
  destroy(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

const BAD_REQUEST_STATUS: Record<string, string> = {
  HPE_HEADER_OVERFLOW: '431 Request Header Fields Too Large',
  ERR_HTTP_REQUEST_TIMEOUT: '408 Request Timeout',
};

function rejectMalformed(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const body = JSON.stringify({ error: { code: 'bad_request', message: 'malformed HTTP request' } });
  const status = BAD_REQUEST_STATUS[err.code ?? ''] ?? '400 Bad Request';
  socket.end(`HTTP/1.1 ${status}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
}

/**
 * Starts the admin API (docs/admin-api.md): health, readiness, Prometheus metrics, the actor
 * tree and its event stream, upstreams, config, reload, drain, debug fault injection and the
 * debug UI on `GET /`. Every route but /healthz, /readyz and /metrics refuses a foreign `Host`
 * or `Origin` with 403, token or not, so a web page cannot drive it.
 *
 * @example
 * const admin = await startAdminServer({ host: '127.0.0.1', port: 9901, token, backend, log });
 * log.info({ port: admin.address.port }, 'admin listening');
 * await admin.close();
 */
export async function startAdminServer(opts: AdminServerOptions): Promise<AdminServer> {
  const { backend } = opts;
  const log = opts.log.child({ actorType: 'admin' });
  const ownMetrics = !opts.metrics;
  const metrics = opts.metrics ?? createMetrics(backend, { log });
  const routes = [...builtinRoutes(), ...(opts.routes ?? [])];
  let checker: { token: string; check: ReturnType<typeof bearerChecker> } | undefined;
  const currentChecker = (): ReturnType<typeof bearerChecker> | undefined => {
    const token = typeof opts.token === 'function' ? opts.token() : opts.token;
    if (!token) return undefined;
    if (checker?.token !== token) checker = { token, check: bearerChecker(token) };
    return checker.check;
  };
  const onLoopback = isLoopbackHost(opts.host);
  const sse = new SseHub({ log, heartbeatMs: opts.sseHeartbeatMs ?? 15_000 });
  const inflight = new Set<ServerResponse>();
  let status: AdminServerStatus = 'listening';
  let onIdle: (() => void) | undefined;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    inflight.add(res);
    res.once('close', () => {
      inflight.delete(res);
      if (inflight.size === 0) onIdle?.();
    });
    if (status !== 'listening') res.setHeader('connection', 'close');
    // No admin route reads a body; drain it so keep-alive connections stay usable.
    req.resume();
    const target = parseTarget(req.url);
    try {
      if (!target) throw new AdminHttpError(400, 'bad_request', 'bad request target');
      const match = matchRoute(routes, target.path);
      const route = match?.route;
      if (!route?.anyHost) {
        const refused = foreignRequest(req.headers, opts.host);
        if (refused) {
          const clip = (v: string | undefined) => v?.slice(0, 200);
          log.warn({ remoteAddress: req.socket.remoteAddress, code: refused.code, req: { method: req.method, path: target.path, host: clip(req.headers.host), origin: clip(req.headers.origin) } }, 'admin request refused: foreign host or origin');
          throw refused;
        }
      }
      const authorized = currentChecker();
      // The config check refuses this, but a reload can drop the token while the listen address,
      // which needs a restart to change, stays off loopback: never serve it open then.
      if (!authorized && !onLoopback && !route?.public) {
        throw new AdminHttpError(401, 'unauthorized', 'admin.token is required while the admin API listens off loopback', {
          headers: { 'www-authenticate': 'Bearer realm="gatehouse-admin"' },
        });
      }
      if (authorized && !route?.public) {
        const viaQuery = route?.queryToken && (req.method === 'GET' || req.method === 'HEAD') ? target.query.get('token') : undefined;
        if (!authorized(req, viaQuery)) {
          const invalid = req.headers.authorization !== undefined || viaQuery != null;
          throw new AdminHttpError(401, 'unauthorized', 'a valid bearer token is required', {
            headers: { 'www-authenticate': invalid ? 'Bearer realm="gatehouse-admin", error="invalid_token"' : 'Bearer realm="gatehouse-admin"' },
          });
        }
      }
      if (!match) throw new AdminHttpError(404, 'not_found', 'no such route');
      if (match.route.debugOnly && !backend.debug) {
        throw new AdminHttpError(404, 'debug_disabled', 'this route exists only in debug mode: start gatehouse with --debug');
      }
      const method = (req.method === 'HEAD' ? 'GET' : req.method) as HttpMethod;
      const handler = Object.hasOwn(match.route.methods, method) ? match.route.methods[method] : undefined;
      if (!handler) {
        throw new AdminHttpError(405, 'method_not_allowed', `${req.method} is not allowed here`, { headers: { allow: allowedMethods(match.route) } });
      }
      await handler({ req, res, path: target.path, query: target.query, params: match.params, backend, metrics, sse, log });
    } catch (err) {
      if (res.headersSent) {
        log.error({ err, req: { method: req.method, path: target?.path } }, 'admin request failed after its headers were sent');
        res.destroy();
      } else if (err instanceof AdminHttpError) {
        sendError(res, err);
      } else {
        log.error({ err, req: { method: req.method, path: target?.path } }, 'admin request failed');
        sendError(res, new AdminHttpError(500, 'internal', 'internal error'));
      }
    }
    // The path only: the query may carry the UI's token. Reads (an open debug UI polls several a
    // second) are at trace level, so that even `--debug` (level debug) logs none of them;
    // changes and failures at debug.
    const level = (req.method === 'GET' || req.method === 'HEAD') && res.statusCode < 400 ? 'trace' : 'debug';
    log[level]({ req: { method: req.method, path: target?.path }, status: res.statusCode, ms: performance.now() - started }, 'admin request');
  }

  const server = createServer((req, res) => void handle(req, res));
  server.on('clientError', rejectMalformed);

  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: opts.host, port: opts.port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    if (ownMetrics) await metrics.close();
    throw new ListenError('admin', `${opts.host}:${opts.port}`, { cause: err });
  }
  server.on('error', (err) => log.error({ err }, 'admin server error'));
  const info = server.address() as AddressInfo;
  const address = { host: info.address, port: info.port };
  log.info({ address }, 'admin listening');

  let closing: Promise<void> | undefined;
  function stop(graceMs: number): Promise<void> {
    if (status === 'listening') status = 'closing';
    if (graceMs === 0) {
      sse.closeAll();
      server.closeAllConnections();
    }
    if (closing) return closing;
    closing = (async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      sse.closeAll();
      server.closeIdleConnections();
      if (inflight.size > 0) {
        let timer: NodeJS.Timeout | undefined;
        await new Promise<void>((resolve) => {
          onIdle = resolve;
          timer = setTimeout(resolve, graceMs);
        });
        clearTimeout(timer);
        onIdle = undefined;
      }
      server.closeAllConnections();
      await closed;
      // 'close' fires before libuv releases the listening handle, which happens in the loop's
      // close phase, after the check phase: two immediates later it is gone for sure.
      await new Promise<void>((resolve) => setImmediate(resolve));
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (ownMetrics) await metrics.close();
      status = 'closed';
      log.info('admin closed');
    })();
    return closing;
  }

  return {
    address,
    metrics,
    get status() {
      return status;
    },
    get sseStreams() {
      return sse.size;
    },
    close: () => stop(opts.closeTimeoutMs ?? 2_000),
    destroy: () => stop(0),
    [Symbol.asyncDispose]: () => stop(opts.closeTimeoutMs ?? 2_000).catch(() => {}),
  };
}
