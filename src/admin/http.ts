import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';

/**
 * The stable `error.code` values of the admin API (documented in `docs/admin-api.md`). Clients
 * match on these, never on the message.
 *
 * @example
 * if (body.error.code === 'config_invalid') console.error(body.errors.join('\n'));
 */
export type AdminErrorCode =
  | 'bad_request'
  | 'bad_query'
  | 'unauthorized'
  | 'host_not_allowed'
  | 'origin_not_allowed'
  | 'not_found'
  | 'method_not_allowed'
  | 'not_ready'
  | 'debug_disabled'
  | 'no_such_shard'
  | 'shard_not_watched'
  | 'no_such_actor'
  | 'no_such_backend'
  | 'no_such_service'
  | 'not_draining'
  | 'registry_full'
  | 'unavailable'
  | 'payload_too_large'
  | 'config_invalid'
  | 'internal';

/**
 * An answer the admin API gives on purpose; thrown by a handler, written by the server as
 * `{ error: { code, message }, ...extra }`.
 *
 * @example
 * throw new AdminHttpError(404, 'no_such_shard', 'no such shard', { extra: { shard: '7' } });
 */
export class AdminHttpError extends Error {
  readonly status: number;
  readonly code: AdminErrorCode;
  readonly headers: Record<string, string>;
  readonly extra: Record<string, unknown>;
  constructor(status: number, code: AdminErrorCode, message: string, opts: { headers?: Record<string, string>; extra?: Record<string, unknown> } = {}) {
    super(message);
    this.name = 'AdminHttpError';
    this.status = status;
    this.code = code;
    this.headers = opts.headers ?? {};
    this.extra = opts.extra ?? {};
  }
}

const JSON_HEADERS = {
  'content-type': 'application/json; charset=utf-8',
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
};

/**
 * Writes `body` as JSON. A value that cannot be serialised (a cycle, a BigInt) becomes a 500, so
 * a bad backend answer never throws out of a handler half-written.
 *
 * @example
 * sendJson(res, 202, { draining: true });
 */
export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  let text: string;
  try {
    text = JSON.stringify(body) ?? 'null';
  } catch {
    status = 500;
    text = JSON.stringify({ error: { code: 'internal', message: 'response could not be serialised' } });
  }
  res.writeHead(status, { ...JSON_HEADERS, ...headers, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/**
 * Writes `{ error: { code, message }, ...extra }` with the error's status and headers.
 *
 * @example
 * sendError(res, new AdminHttpError(404, 'not_found', 'no such route'));
 */
export function sendError(res: ServerResponse, err: AdminHttpError): void {
  sendJson(res, err.status, { error: { code: err.code, message: err.message }, ...err.extra }, err.headers);
}

/**
 * The request target split into a path and its query; `undefined` when it is not a usable target.
 *
 * @example
 * parseTarget('/actors?depth=1'); // { path: '/actors', query: URLSearchParams { depth: '1' } }
 */
export function parseTarget(rawUrl: string | undefined): { path: string; query: URLSearchParams } | undefined {
  if (!rawUrl) return undefined;
  if (rawUrl.startsWith('/')) {
    const q = rawUrl.indexOf('?');
    const path = q === -1 ? rawUrl : rawUrl.slice(0, q);
    return { path, query: new URLSearchParams(q === -1 ? '' : rawUrl.slice(q + 1)) };
  }
  // Absolute-form (`GET http://host/path`), which HTTP/1.1 servers must accept.
  try {
    const u = new URL(rawUrl);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') return undefined;
    return { path: u.pathname, query: u.searchParams };
  } catch {
    return undefined;
  }
}

/**
 * Reads an optional non-negative integer query parameter; anything else (a sign, a fraction, an
 * exponent, a repeat, more than `max`) is a 400 `bad_query` naming the parameter.
 *
 * @example
 * const depth = intParam(query, 'depth', 1_000); // undefined when absent
 */
export function intParam(query: URLSearchParams, name: string, max: number): number | undefined {
  const all = query.getAll(name);
  if (all.length === 0) return undefined;
  const raw = all[0]!;
  if (all.length > 1 || !/^\d{1,9}$/.test(raw) || Number(raw) > max) {
    throw new AdminHttpError(400, 'bad_query', `${name} must be an integer from 0 to ${max}`, { extra: { param: name } });
  }
  return Number(raw);
}

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

/**
 * A bearer-token check in constant time: both sides are hashed first, so neither the content nor
 * the length of the token leaks through timing. `queryToken` is used only when the request has no
 * well-formed `Authorization: Bearer` header.
 *
 * @example
 * const authorized = bearerChecker(token);
 * if (!authorized(req)) throw new AdminHttpError(401, 'unauthorized', 'a valid bearer token is required');
 */
export function bearerChecker(token: string): (req: IncomingMessage, queryToken?: string | null) => boolean {
  const want = digest(token);
  return (req, queryToken) => {
    const header = req.headers.authorization;
    const m = typeof header === 'string' ? /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header) : null;
    const given = m?.[1] ?? queryToken ?? undefined;
    if (given === undefined) return false;
    return timingSafeEqual(digest(given), want);
  };
}

// `name`, `name:port`, `[v6]` or `[v6]:port`; the name part lower-cased.
const HOST = /^(\[[0-9a-f:.]+\]|[^:[\]/\s@]+)(?::\d{1,5})?$/;

function allowedHostName(name: string, listenHost: string): boolean {
  if (name.startsWith('[')) return isIP(name.slice(1, -1)) === 6;
  return isIP(name) === 4 || name === 'localhost' || name === listenHost.toLowerCase();
}

/**
 * Refuses a request a web page may have sent: a `Host` that is not an IP literal, `localhost` or
 * the listen host (a DNS-rebinding page reaches us under its own name), or an `Origin` that is
 * not this very `Host` over http(s) (a page of another site or port; `null` included). Browsers
 * always send `Origin` on a cross-origin POST, `no-cors` mode too. Returns the 403 to answer, or
 * undefined when the request may proceed.
 *
 * @example
 * const refused = foreignRequest(req.headers, '127.0.0.1');
 * if (refused) throw refused;
 */
export function foreignRequest(headers: IncomingHttpHeaders, listenHost: string): AdminHttpError | undefined {
  const host = headers.host?.toLowerCase();
  const name = host === undefined ? undefined : HOST.exec(host)?.[1];
  if (host === undefined || name === undefined || !allowedHostName(name, listenHost)) {
    return new AdminHttpError(403, 'host_not_allowed', 'the Host header must be an IP address, localhost or the admin listen host');
  }
  const origin = headers.origin;
  if (origin !== undefined && origin.toLowerCase() !== `http://${host}` && origin.toLowerCase() !== `https://${host}`) {
    return new AdminHttpError(403, 'origin_not_allowed', 'cross-origin requests are refused: the Origin must be this admin address');
  }
  return undefined;
}
