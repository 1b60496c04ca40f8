/**
 * Byte classes and the parse error of the HTTP/1.1 request codec. Lookup tables (one
 * `Uint8Array` of 256 entries per class) keep every per-byte check a single indexed load: no
 * regular expressions run on untrusted input.
 */

/** The stable error codes of the HTTP listener contract that the codec can raise. */
export type HttpParseErrorCode =
  | 'bad_request'
  | 'uri_too_long'
  | 'headers_too_large'
  | 'not_implemented'
  | 'http_version_not_supported'
  | 'body_too_large'
  | 'bad_gateway';

const STATUS: Record<HttpParseErrorCode, number> = {
  bad_request: 400,
  uri_too_long: 414,
  headers_too_large: 431,
  not_implemented: 501,
  http_version_not_supported: 505,
  body_too_large: 413,
  bad_gateway: 502,
};

/**
 * A request the codec refuses. `status` is the HTTP status to answer with and `code` the stable
 * error code of the JSON error body; `message` says which rule failed (for logs, not clients).
 * The connection cannot continue after one: the byte stream is no longer framed.
 *
 * @example
 * try { parser.next(); } catch (err) {
 *   if (err instanceof HttpParseError) answer(err.status, { error: err.code });
 * }
 */
export class HttpParseError extends Error {
  readonly code: HttpParseErrorCode;
  readonly status: number;
  constructor(code: HttpParseErrorCode, message: string) {
    super(message);
    this.name = 'HttpParseError';
    this.code = code;
    this.status = STATUS[code];
  }
}

/** Shorthand used by the parsers: `throw fail('bad_request', 'why')`. */
export function fail(code: HttpParseErrorCode, message: string): HttpParseError {
  return new HttpParseError(code, message);
}

function table(chars: string, ranges: [number, number][] = []): Uint8Array {
  const t = new Uint8Array(256);
  for (let i = 0; i < chars.length; i++) t[chars.charCodeAt(i)] = 1;
  for (const [lo, hi] of ranges) for (let c = lo; c <= hi; c++) t[c] = 1;
  return t;
}

const ALNUM: [number, number][] = [[0x30, 0x39], [0x41, 0x5a], [0x61, 0x7a]];

/**
 * RFC 9110 `tchar`: the bytes of a method, a header name or a transfer coding.
 *
 * @example
 * TOKEN[0x41] === 1; // 'A'
 */
export const TOKEN = table("!#$%&'*+-.^_`|~", ALNUM);

/**
 * Bytes allowed in a header field value: HTAB, SP, VCHAR and obs-text. No other CTL, no DEL.
 *
 * @example
 * FIELD_VALUE[0x09] === 1 && FIELD_VALUE[0x00] === 0;
 */
export const FIELD_VALUE = table('\t', [[0x20, 0x7e], [0x80, 0xff]]);

/**
 * Bytes allowed in a request-target: the visible ASCII characters (RFC 3986 plus the few that
 * browsers send unescaped). Anything else, including obs-text and SP, is refused.
 *
 * @example
 * TARGET[0x2f] === 1 && TARGET[0x20] === 0;
 */
export const TARGET = table('', [[0x21, 0x7e]]);

/**
 * Bytes allowed in a Host value or an authority-form target: unreserved, sub-delims, `:`, `%`
 * and the brackets of an IP literal. No `/`, `?`, `#`, `@` or whitespace.
 *
 * @example
 * HOST[0x3a] === 1 && HOST[0x40] === 0;
 */
export const HOST = table("-._~!$&'()*+,;=:%[]", ALNUM);

/**
 * Hex digit values, or 255 for a byte that is not a hex digit.
 *
 * @example
 * HEX[0x66] === 15;
 */
export const HEX = new Uint8Array(256).fill(255);
for (let c = 0; c < 10; c++) HEX[0x30 + c] = c;
for (let c = 0; c < 6; c++) HEX[0x41 + c] = HEX[0x61 + c] = 10 + c;

/**
 * The methods Node's own parser (llhttp) knows for requests: the codec accepts no other, so it
 * is never more lenient than llhttp. An unknown token is 501, as RFC 9110 §9.1 says.
 *
 * @example
 * METHODS.has('GET');
 */
export const METHODS: ReadonlySet<string> = new Set([
  'ACL', 'BIND', 'CHECKOUT', 'CONNECT', 'COPY', 'DELETE', 'GET', 'HEAD', 'LINK', 'LOCK',
  'M-SEARCH', 'MERGE', 'MKACTIVITY', 'MKCALENDAR', 'MKCOL', 'MOVE', 'NOTIFY', 'OPTIONS', 'PATCH',
  'POST', 'PROPFIND', 'PROPPATCH', 'PURGE', 'PUT', 'QUERY', 'REBIND', 'REPORT', 'SEARCH',
  'SOURCE', 'SUBSCRIBE', 'TRACE', 'UNBIND', 'UNLINK', 'UNLOCK', 'UNSUBSCRIBE',
]);
