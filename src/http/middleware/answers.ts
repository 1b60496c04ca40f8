/**
 * The answers the gateway makes itself: a complete HTTP/1.1 response with a JSON body
 * `{"error":"<code>","requestId":"…"}`. The status line and the constant fields are built once
 * per status; a request pays for one string and one Buffer.
 */

/**
 * The stable error codes of the HTTP listener contract, with their status.
 *
 * @example
 * ERROR_STATUS.rate_limited; // 429
 */
export const ERROR_STATUS = {
  bad_request: 400,
  unauthorized: 401,
  forbidden: 403,
  upgrade_not_allowed: 403,
  no_route: 404,
  method_not_allowed: 405,
  body_too_large: 413,
  uri_too_long: 414,
  rate_limited: 429,
  headers_too_large: 431,
  internal_error: 500,
  not_implemented: 501,
  bad_gateway: 502,
  unavailable: 503,
  timeout: 504,
  http_version_not_supported: 505,
} as const;

/** @example const code: GatewayErrorCode = 'no_route'; */
export type GatewayErrorCode = keyof typeof ERROR_STATUS;

const REASONS: Record<number, string> = {
  204: 'No Content',
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  413: 'Content Too Large',
  414: 'URI Too Long',
  429: 'Too Many Requests',
  431: 'Request Header Fields Too Large',
  500: 'Internal Server Error',
  501: 'Not Implemented',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
  505: 'HTTP Version Not Supported',
};

/**
 * The reason phrase of a status the gateway answers with ('' for another status: the phrase
 * is optional in HTTP/1.1).
 *
 * @example
 * reasonPhrase(404); // 'Not Found'
 */
export function reasonPhrase(status: number): string {
  return REASONS[status] ?? '';
}

/**
 * Optional fields of a gateway answer.
 *
 * @example
 * gatewayAnswer('rate_limited', id, { retryAfter: 2, close: false });
 */
export interface AnswerOptions {
  /** Add `connection: close` (the connection is closed after this answer). */
  close?: boolean;
  /** The request was HEAD: send the fields (content-length included) but no body. */
  head?: boolean;
  /** `Allow` of a 405. */
  allow?: string;
  /** `Retry-After` of a 429 or 503, in whole seconds (at least 1 is sent). */
  retryAfter?: number;
  /** `WWW-Authenticate` of a 401. */
  wwwAuthenticate?: string;
  /** Further preformatted field lines, each ending in CRLF (CORS fields, `vary`). */
  extra?: string;
}

const START = new Map<number, string>();

/** `HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n`, built once per status. */

function startOf(status: number): string {
  let s = START.get(status);
  if (s === undefined) {
    s = `HTTP/1.1 ${status} ${reasonPhrase(status)}\r\ncontent-type: application/json\r\n`;
    START.set(status, s);
  }
  return s;
}

/** Escapes what JSON needs; a request id is visible ASCII, so only `"` and `\` can occur. */
function jsonString(s: string): string {
  return s.indexOf('"') < 0 && s.indexOf('\\') < 0 ? `"${s}"` : JSON.stringify(s);
}

/**
 * Serialises a gateway error answer. `requestId` must be a valid request id (visible ASCII, as
 * `requestIdOf` gives), `code` one of the contract's codes; the status is the code's unless
 * `status` is given.
 *
 * @example
 * socket.write(gatewayAnswer('method_not_allowed', id, { allow: 'GET, HEAD' }));
 * // HTTP/1.1 405 Method Not Allowed ... {"error":"method_not_allowed","requestId":"…"}
 */
export function gatewayAnswer(code: GatewayErrorCode, requestId: string, opts?: AnswerOptions, status: number = ERROR_STATUS[code]): Buffer {
  const body = `{"error":"${code}","requestId":${jsonString(requestId)}}`;
  let head = `${startOf(status)}content-length: ${body.length}\r\nx-request-id: ${requestId}\r\n`;
  if (opts !== undefined) {
    if (opts.allow !== undefined) head += `allow: ${opts.allow}\r\n`;
    if (opts.retryAfter !== undefined) head += `retry-after: ${Math.max(1, Math.ceil(opts.retryAfter))}\r\n`;
    if (opts.wwwAuthenticate !== undefined) head += `www-authenticate: ${opts.wwwAuthenticate}\r\n`;
    if (opts.extra !== undefined) head += opts.extra;
    if (opts.close === true) head += 'connection: close\r\n';
  }
  head += '\r\n';
  // Everything is latin1-safe: ASCII ids and codes, header values that came through the codec.
  return Buffer.from(opts?.head === true ? head : head + body, 'latin1');
}
