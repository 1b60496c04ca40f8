/**
 * The header rewrite of a proxied exchange, in one pass over the codec's flat list: hop-by-hop
 * fields, framing fields and the fields the gateway sets itself are dropped, then the gateway's
 * fields and the route's `set` are appended. A per-connection `Exchange` is reused, so a request
 * allocates only the strings it adds and the output list's growth.
 */
import type { RouteConfig } from '../../config/types.ts';
import { stripPrefix } from '../router.ts';
import { clientAddress, forwardedForValue, type CompiledForwarded } from './forwarded.ts';
import type { CompiledCors } from './cors.ts';
import { unmapAddress } from './ip.ts';

/**
 * A route's `headers`, compiled: lowercase names; `drop` holds the removed and the set names.
 *
 * @example
 * compileHeaderRules({ request: { remove: ['Cookie'] } }).requestDrop.has('cookie'); // true
 */
export interface HeaderRules {
  requestSet: readonly string[];
  requestDrop: ReadonlySet<string>;
  responseSet: readonly string[];
  responseDrop: ReadonlySet<string>;
}

type Rules = NonNullable<RouteConfig['headers']>['request'];

function side(r: Rules | undefined): [string[], Set<string>] {
  const set: string[] = [];
  const drop = new Set<string>();
  for (const n of r?.remove ?? []) drop.add(n.toLowerCase());
  for (const [n, v] of Object.entries(r?.set ?? {})) {
    set.push(n.toLowerCase(), v);
    drop.add(n.toLowerCase());
  }
  return [set, drop];
}

/**
 * Compiles a route's `headers: { request: { set, remove }, response: { set, remove } }`.
 *
 * @example
 * const rules = compileHeaderRules({ request: { set: { 'X-Env': 'prod' }, remove: ['cookie'] } });
 * rules.requestSet; // ['x-env', 'prod']
 */
export function compileHeaderRules(cfg: RouteConfig['headers']): HeaderRules {
  const [requestSet, requestDrop] = side(cfg?.request);
  const [responseSet, responseDrop] = side(cfg?.response);
  return { requestSet, requestDrop, responseSet, responseDrop };
}

/**
 * The state of the current exchange on a connection, reused for each request: inputs set by
 * the connection (peer, TLS, port) and what the request pass found (id, client, origin).
 *
 * @example
 * const ex = new Exchange(socket.remoteAddress!, false, 8080, fw);
 */
export class Exchange {
  readonly peer: string;
  readonly peerTrusted: boolean;
  readonly proto: string;
  readonly port: string;
  requestId = '';
  clientAddress = '';
  /**
   * The verified client certificate's subject on a mutual-TLS connection (`CN=alice,O=Example`),
   * sent upstream as `X-Client-Cert-Subject`; undefined otherwise.
   */
  clientCertSubject: string | undefined = undefined;
  /** The request's `Origin`, when it had one (CORS on the response). */
  origin: string | undefined = undefined;
  /** Names listed in `Connection` (lowercase), reused between requests. */
  private readonly listed: string[] = [];

  readonly fw: CompiledForwarded;

  constructor(peer: string, tls: boolean, localPort: number | string, fw: CompiledForwarded) {
    this.fw = fw;
    this.peer = unmapAddress(peer);
    this.peerTrusted = fw.trusted.matches(this.peer);
    this.proto = tls ? 'https' : 'http';
    this.port = typeof localPort === 'string' ? localPort : String(localPort);
  }

  /**
   * Collects the tokens of every `Connection` field except close, keep-alive, upgrade and host
   * (Host is end to end and an HTTP/1.1 request needs it: `Connection: host` from a client
   * made the gateway send a request without Host, which the backend refused with a 400).
   */
  collectListed(headers: readonly string[]): readonly string[] {
    const out = this.listed;
    out.length = 0;
    for (let i = 0; i < headers.length; i += 2) {
      if (headers[i] !== 'connection') continue;
      const v = headers[i + 1];
      // The usual values list no field: skip them without tokenising.
      if (v === 'keep-alive' || v === 'close' || v === 'Keep-Alive' || v === 'Upgrade' || v === 'upgrade') continue;
      let s = 0;
      while (s < v.length) {
        let e = v.indexOf(',', s);
        if (e < 0) e = v.length;
        let a = s;
        let b = e;
        while (a < b && (v.charCodeAt(a) === 32 || v.charCodeAt(a) === 9)) a++;
        while (b > a && (v.charCodeAt(b - 1) === 32 || v.charCodeAt(b - 1) === 9)) b--;
        if (b > a) {
          const t = v.slice(a, b).toLowerCase();
          if (t !== 'close' && t !== 'keep-alive' && t !== 'upgrade' && t !== 'host') out.push(t);
        }
        s = e + 1;
      }
    }
    return out;
  }
}

// The fields the rewrite looks at, by class: one hash lookup per field instead of a chain of
// string compares (the codec's names are fresh strings, not internalized).
const HOP = 1;
const UPGRADE = 2;
const PROXY_AUTH = 3;
const XFF = 4;
const XF_PROTO = 5;
const XF_HOST = 6;
const XF_PORT = 7;
const ORIGIN = 8;
const ACAO = 9;
const CLIENT_CERT = 10;
/**
 * The request field that carries the verified client certificate's subject (mutual TLS) to
 * the backend. The gateway alone sets it: whatever a client sent under this name is dropped.
 */
export const CLIENT_CERT_HEADER = 'x-client-cert-subject';
const KIND = new Map<string, number>([
  ['connection', HOP], ['keep-alive', HOP], ['te', HOP], ['trailer', HOP], ['transfer-encoding', HOP],
  ['proxy-connection', HOP], ['content-length', HOP], ['x-request-id', HOP], ['upgrade', UPGRADE],
  ['proxy-authorization', PROXY_AUTH], ['x-forwarded-for', XFF], ['x-forwarded-proto', XF_PROTO],
  ['x-forwarded-host', XF_HOST], ['x-forwarded-port', XF_PORT], ['origin', ORIGIN],
  ['access-control-allow-origin', ACAO], ['access-control-allow-credentials', ACAO],
  [CLIENT_CERT_HEADER, CLIENT_CERT],
]);

/**
 * Flag of `prepareUpstream`: the route passes this upgrade (`websocket: true`), keep `Upgrade`.
 *
 * @example
 * prepareUpstream(h, host, ex, rules, PASS_UPGRADE | AUTHENTICATED, out);
 */
export const PASS_UPGRADE = 1;
/** Flag: the gateway verified the client's credentials, so `Proxy-Authorization` is not forwarded. @example prepareUpstream(h, host, ex, rules, AUTHENTICATED, out); */
export const AUTHENTICATED = 2;

/**
 * Builds the upstream header list of a request into `out` (cleared first) and fills `ex`
 * (`clientAddress`, `origin`; `ex.requestId` must already be set, from `requestIdOf`).
 * `host` is the request's Host (for X-Forwarded-Host). The framing fields are dropped: the
 * serialiser writes the ones the proxy chose. A route rule on a gateway field (`x-forwarded-*`,
 * `x-request-id`) replaces or drops it. An HTTP/1.0 request without Host yields no `host`
 * field: the caller adds the backend's before sending HTTP/1.1 upstream.
 *
 * @example
 * ex.requestId = requestIdOf(head.headers, ids);
 * prepareUpstream(head.headers, head.host, ex, rules, 0, out);
 * socket.write(serializeRequestHead(head.method, target, out, head.chunked ? CHUNKED : head.contentLength));
 */
export function prepareUpstream(headers: readonly string[], host: string | undefined, ex: Exchange, rules: HeaderRules, flags: number, out: string[]): void {
  out.length = 0;
  const listed = ex.collectListed(headers);
  const drop = rules.requestDrop.size > 0 ? rules.requestDrop : undefined;
  const trusted = ex.peerTrusted;
  let xff = '';
  let haveProto = false;
  let haveHost = false;
  let havePort = false;
  ex.origin = undefined;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i];
    const value = headers[i + 1];
    const kind = KIND.get(name);
    if (kind === HOP) continue;
    // A field the sender named in Connection is gone before anything reads it: a trusted peer's
    // listed X-Forwarded-Proto used to count as present, so none at all was sent upstream.
    if (listed.length > 0 && listed.includes(name)) continue;
    if (kind !== undefined) {
      switch (kind) {
        case UPGRADE:
          if ((flags & PASS_UPGRADE) === 0) continue;
          break;
        case PROXY_AUTH:
          if ((flags & AUTHENTICATED) !== 0) continue;
          break;
        case XFF:
          if (value !== '') xff = xff === '' ? value : `${xff}, ${value}`;
          continue;
        case XF_PROTO:
          if (!trusted) continue;
          haveProto = true;
          break;
        case XF_HOST:
          if (!trusted) continue;
          haveHost = true;
          break;
        case XF_PORT:
          if (!trusted) continue;
          havePort = true;
          break;
        case ORIGIN:
          ex.origin = value;
          break;
        case CLIENT_CERT:
          continue;
      }
    }
    if (drop !== undefined && drop.has(name)) continue;
    out.push(name, value);
  }
  ex.clientAddress = trusted ? clientAddress(ex.peer, xff, ex.fw) : ex.peer;
  // A route rule naming one of the gateway's own fields replaces (set) or drops (remove) it.
  if (drop === undefined || !drop.has('x-forwarded-for')) out.push('x-forwarded-for', forwardedForValue(xff, ex.peer, ex.fw));
  if (!haveProto && (drop === undefined || !drop.has('x-forwarded-proto'))) out.push('x-forwarded-proto', ex.proto);
  if (!haveHost && host !== undefined && (drop === undefined || !drop.has('x-forwarded-host'))) out.push('x-forwarded-host', host);
  if (!havePort && (drop === undefined || !drop.has('x-forwarded-port'))) out.push('x-forwarded-port', ex.port);
  if (drop === undefined || !drop.has('x-request-id')) out.push('x-request-id', ex.requestId);
  if (ex.clientCertSubject !== undefined) out.push(CLIENT_CERT_HEADER, ex.clientCertSubject);
  if ((flags & PASS_UPGRADE) !== 0) out.push('connection', 'upgrade');
  const set = rules.requestSet;
  for (let i = 0; i < set.length; i++) out.push(set[i]);
}

/**
 * Builds the client's response header list into `out` (cleared first): hop-by-hop and framing
 * fields of the backend dropped (Upgrade kept on a 101), the route's `response` rules, CORS
 * fields when the request's origin is allowed, and `x-request-id`.
 *
 * @example
 * prepareResponse(upstreamHeaders, 200, ex, rules, cors, out);
 */
export function prepareResponse(headers: readonly string[], status: number, ex: Exchange, rules: HeaderRules, cors: CompiledCors | undefined, out: string[]): void {
  out.length = 0;
  const listed = ex.collectListed(headers);
  const drop = rules.responseDrop.size > 0 ? rules.responseDrop : undefined;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i];
    const kind = KIND.get(name);
    if (kind !== undefined) {
      if (kind === HOP) continue;
      if (kind === UPGRADE && status !== 101) continue;
      // The gateway owns CORS on a route with `cors`: a backend's answer would contradict it.
      if (kind === ACAO && cors !== undefined) continue;
    }
    if (listed.length > 0 && listed.includes(name)) continue;
    if (drop !== undefined && drop.has(name)) continue;
    out.push(name, headers[i + 1]);
  }
  // On a CORS route the answer depends on Origin whoever asks: a shared cache must key on it.
  if (cors !== undefined && (ex.origin === undefined || !cors.addResponseHeaders(ex.origin, out))) out.push('vary', 'Origin');
  if (drop === undefined || !drop.has('x-request-id')) out.push('x-request-id', ex.requestId);
  if (status === 101) out.push('connection', 'upgrade');
  const set = rules.responseSet;
  for (let i = 0; i < set.length; i++) out.push(set[i]);
}

/**
 * The request-target for the upstream: origin-form (an absolute-form target loses its scheme
 * and authority), without the route's prefix when the route has `stripPrefix`.
 *
 * @example
 * upstreamTarget('http://a.example/v1/x?q', '/v1'); // '/x?q'
 * upstreamTarget('/v1/x', undefined);               // '/v1/x'
 */
export function upstreamTarget(target: string, strip: string | undefined): string {
  let path = target;
  if (target.charCodeAt(0) !== 0x2f && target !== '*') {
    const scheme = target.indexOf('://');
    if (scheme < 0) return target; // authority-form (CONNECT): nothing to rewrite
    let p = scheme + 3;
    while (p < target.length && target.charCodeAt(p) !== 0x2f && target.charCodeAt(p) !== 0x3f) p++;
    path = p === target.length ? '/' : target.charCodeAt(p) === 0x3f ? `/${target.slice(p)}` : target.slice(p);
  }
  return strip === undefined ? path : stripPrefix(path, strip);
}
