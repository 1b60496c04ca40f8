/**
 * Head serialisers: a start line, a flat header list and the body framing the proxy chose,
 * written into one Buffer whose size is computed first (one allocation per head, small heads
 * from Node's buffer pool; no string is built on the way). Every string written is latin1-safe: names and values came through
 * the codec or a config check that refuses characters above U+00FF.
 */

/** Framing: no body field at all (a GET without body, a 204, a 304). @example serializeRequestHead('GET', '/', hs, NO_BODY); */
export const NO_BODY = -1;
/** Framing: `transfer-encoding: chunked`; any value >= 0 is a `content-length`. @example serializeRequestHead('POST', '/', hs, head.chunked ? CHUNKED : head.contentLength); */
export const CHUNKED = -2;

type Latin1 = Buffer & { latin1Write(s: string, offset: number): number };

const CHUNKED_LINE = 'transfer-encoding: chunked\r\n';
const CL_PREFIX = 'content-length: ';

/** Copies a short latin1 string byte by byte: below ~16 chars cheaper than a call into C++. */
function put(buf: Latin1, p: number, s: string): number {
  const n = s.length;
  if (n > 16) return p + buf.latin1Write(s, p);
  for (let k = 0; k < n; k++) buf[p + k] = s.charCodeAt(k);
  return p + n;
}

// Sizes first, then one Buffer and no intermediate strings (no concatenation of the fields).
function writeHead(startLine: string, headers: readonly string[], framing: number): Buffer {
  const cl = framing >= 0 ? String(framing) : '';
  let len = startLine.length + 4; // start line CRLF + final CRLF
  for (let i = 0; i < headers.length; i += 2) len += headers[i].length + headers[i + 1].length + 4;
  if (framing === CHUNKED) len += CHUNKED_LINE.length;
  else if (framing >= 0) len += CL_PREFIX.length + cl.length + 2;
  const buf = Buffer.allocUnsafe(len) as Latin1;
  let p = put(buf, 0, startLine);
  buf[p++] = 13;
  buf[p++] = 10;
  for (let i = 0; i < headers.length; i += 2) {
    p = put(buf, p, headers[i]);
    buf[p++] = 58;
    buf[p++] = 32;
    p = put(buf, p, headers[i + 1]);
    buf[p++] = 13;
    buf[p++] = 10;
  }
  if (framing === CHUNKED) p = put(buf, p, CHUNKED_LINE);
  else if (framing >= 0) {
    p = put(buf, p, CL_PREFIX);
    p = put(buf, p, cl);
    buf[p++] = 13;
    buf[p++] = 10;
  }
  buf[p++] = 13;
  buf[p] = 10;
  return buf;
}

/**
 * The request head for the upstream: `METHOD target HTTP/1.1`, the headers, then
 * `content-length: N` (framing >= 0), `transfer-encoding: chunked` (`CHUNKED`) or neither
 * (`NO_BODY`). `headers` must not carry framing fields of their own (`prepareUpstream` drops
 * them).
 *
 * @example
 * serializeRequestHead('GET', '/users', ['host', 'api', 'x-request-id', 'r1'], NO_BODY);
 * // 'GET /users HTTP/1.1\r\nhost: api\r\nx-request-id: r1\r\n\r\n'
 */
export function serializeRequestHead(method: string, target: string, headers: readonly string[], framing: number): Buffer {
  return writeHead(`${method} ${target} HTTP/1.1`, headers, framing);
}

/**
 * The response head for the client: `HTTP/1.1 status reason`, the headers and the framing
 * chosen, as for `serializeRequestHead`.
 *
 * @example
 * serializeResponseHead(200, 'OK', ['content-type', 'text/plain'], 5);
 * // 'HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n'
 */
export function serializeResponseHead(status: number, reason: string, headers: readonly string[], framing: number): Buffer {
  return writeHead(`HTTP/1.1 ${status} ${reason}`, headers, framing);
}
