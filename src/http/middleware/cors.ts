/**
 * CORS per route. A preflight is answered by the gateway itself (it never reaches the
 * backend); other requests from a listed origin get `Access-Control-Allow-Origin` on the
 * response. The constant fields are joined once per route into preformatted lines.
 */
import type { CorsConfig } from '../../config/types.ts';
import { gatewayAnswer } from './answers.ts';

const DEFAULT_METHODS = 'GET, HEAD, POST, PUT, DELETE, PATCH';

/**
 * A route's CORS policy, compiled once per config.
 *
 * @example
 * const cors = compileCors({ origins: ['https://app.example.com'], credentials: false });
 * cors.allows('https://app.example.com'); // true
 */
export class CompiledCors {
  private readonly any: boolean;
  private readonly origins: ReadonlySet<string>;
  /** Allow-Headers as configured, or undefined to echo the request's. */
  private readonly allowHeaders: string | undefined;
  /** Preflight lines after Allow-Origin except Allow-Headers: methods, max-age, credentials, vary. */
  private readonly preflightTail: string;
  /** Response fields after Allow-Origin (credentials, expose-headers, vary) as flat pairs. */
  private readonly responsePairs: readonly string[];

  constructor(cfg: CorsConfig, routeMethods?: readonly string[]) {
    this.any = cfg.origins.includes('*');
    this.origins = new Set(cfg.origins.map((o) => o.toLowerCase()));
    this.allowHeaders = cfg.headers && cfg.headers.join(', ');
    const cred = cfg.credentials ? 'access-control-allow-credentials: true\r\n' : '';
    const methods = cfg.methods?.join(', ') ?? routeMethods?.join(', ') ?? DEFAULT_METHODS;
    this.preflightTail =
      `access-control-allow-methods: ${methods}\r\n` +
      (cfg.maxAge !== undefined ? `access-control-max-age: ${cfg.maxAge}\r\n` : '') +
      cred + 'vary: Origin\r\n';
    const pairs: string[] = [];
    if (cfg.credentials) pairs.push('access-control-allow-credentials', 'true');
    if (cfg.exposeHeaders) pairs.push('access-control-expose-headers', cfg.exposeHeaders.join(', '));
    pairs.push('vary', 'Origin');
    this.responsePairs = pairs;
  }

  /** True when a request from `origin` may read the response (`*` allows every origin). */
  allows(origin: string): boolean {
    return this.any || this.origins.has(origin) || this.origins.has(origin.toLowerCase());
  }

  /**
   * The gateway's answer to a preflight: 204 with the CORS fields when the origin is listed,
   * else 403 `forbidden` without `Access-Control-Allow-Origin`. `requestHeaders` is the
   * request's `Access-Control-Request-Headers`, echoed when the route lists no `headers`.
   *
   * @example
   * socket.write(cors.preflight('https://app.example.com', 'content-type', id, false));
   */
  preflight(origin: string, requestHeaders: string | undefined, requestId: string, close: boolean): Buffer {
    if (!this.allows(origin)) return gatewayAnswer('forbidden', requestId, { close, extra: 'vary: Origin\r\n' });
    const headers = this.allowHeaders ?? requestHeaders;
    const head =
      `HTTP/1.1 204 No Content\r\naccess-control-allow-origin: ${origin}\r\n` +
      (headers ? `access-control-allow-headers: ${headers}\r\n` : '') +
      `${this.preflightTail}x-request-id: ${requestId}\r\n${close ? 'connection: close\r\n' : ''}\r\n`;
    return Buffer.from(head, 'latin1');
  }

  /**
   * Appends the response fields for a request from `origin` to a flat header list when the
   * origin is listed; returns whether it did.
   *
   * @example
   * if (origin !== undefined) cors.addResponseHeaders(origin, responseHeaders);
   */
  addResponseHeaders(origin: string, out: string[]): boolean {
    if (!this.allows(origin)) return false;
    out.push('access-control-allow-origin', origin);
    for (let i = 0; i < this.responsePairs.length; i++) out.push(this.responsePairs[i]);
    return true;
  }
}

/**
 * Compiles a route's `cors`; the preflight's Allow-Methods default to the route's
 * `match.methods`, else GET, HEAD, POST, PUT, DELETE, PATCH.
 *
 * @example
 * const cors = compileCors(route.cors!, route.match.methods);
 */
export function compileCors(cfg: CorsConfig, routeMethods?: readonly string[]): CompiledCors {
  return new CompiledCors(cfg, routeMethods);
}

/**
 * True for a CORS preflight: OPTIONS with `Origin` and `Access-Control-Request-Method`.
 *
 * @example
 * isPreflight('OPTIONS', ['origin', 'https://a', 'access-control-request-method', 'PUT']); // true
 */
export function isPreflight(method: string, headers: readonly string[]): boolean {
  if (method !== 'OPTIONS') return false;
  let origin = false;
  let acrm = false;
  for (let i = 0; i < headers.length; i += 2) {
    const n = headers[i];
    if (n === 'origin') origin = true;
    else if (n === 'access-control-request-method') acrm = true;
  }
  return origin && acrm;
}
