/**
 * The upstream response head (RFC 9112 §4 and §6.3): status line, field lines and how its body
 * is framed, which depends on the request it answers. Field lines follow the request rules
 * (fields.ts); any violation is a `bad_gateway` error, raised by the parser.
 */
import { FIELD_VALUE, fail } from './chars.ts';
import { Codings, codingsOf, contentLengthOf, listHas, parseFields } from './fields.ts';

/**
 * How a response body is delimited, in `ResponseHead.framing`.
 *
 * @example
 * if (head.framing === Framing.Close) pool.discard(socket); // the body ends at the FIN
 */
export const Framing = {
  /** No body: a 1xx, 204 or 304, an answer to HEAD, or a Content-Length of 0. */
  None: 0,
  /** `contentLength` bytes. */
  Length: 1,
  /** Chunked transfer coding, possibly with trailers. */
  Chunked: 2,
  /** Until the upstream closes (no length given): the connection cannot be reused. */
  Close: 3,
  /** 101, or a 2xx to CONNECT: the bytes that follow the head belong to a tunnel. */
  Tunnel: 4,
} as const;
/** @example if (head.framing === Framing.Tunnel) pipe(parser.takeRest()); */
export type Framing = (typeof Framing)[keyof typeof Framing];

/**
 * What the request a response answers changes in its framing (bits of `ResponseParser.expect`).
 *
 * @example
 * parser.expect(req.method === 'HEAD' ? AnswerTo.Head : AnswerTo.Plain);
 */
export const AnswerTo = {
  Plain: 0,
  /** A HEAD request: the response has no body whatever its fields say. */
  Head: 1,
  /** A CONNECT request: a 2xx opens a tunnel. */
  Connect: 2,
  /** The request asked for an Upgrade: only then is a 101 valid. */
  Upgrade: 4,
} as const;

/**
 * A parsed response head. `headers` is a flat `[name, value, ...]` array, lowercase names in
 * arrival order, as in `RequestHead`.
 *
 * @example
 * if (head.status >= 200 && !head.keepAlive) pool.discard(socket);
 */
export interface ResponseHead {
  status: number;
  /** The reason phrase, possibly empty. */
  reason: string;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  versionMinor: 0 | 1;
  headers: string[];
  /** The Content-Length field (also on HEAD, 204 and 304 answers), or -1 when absent. */
  contentLength: number;
  framing: Framing;
  /** The upstream connection may carry another request after this response. */
  keepAlive: boolean;
}

const SP = 32;

/** `Buffer#latin1Slice`: skips `toString`'s encoding dispatch, as fields.ts does. */
type Latin1 = Buffer & { latin1Slice(start: number, end: number): string };

/**
 * Parses a complete head in `buf[start, end)` (`end` just past the empty line, `lineEnd` the CR
 * of the status line) for a request described by `answerTo` (`AnswerTo` bits).
 *
 * @example
 * const b = Buffer.from('HTTP/1.1 204 No Content\r\n\r\n');
 * parseResponseHead(b, 0, 23, b.length, AnswerTo.Plain).framing === Framing.None;
 */
export function parseResponseHead(buf: Buffer, start: number, lineEnd: number, end: number, answerTo: number): ResponseHead {
  // `HTTP/1.x SSS reason`: the status must be 3 digits, 100 to 999.
  const p = start;
  if (
    lineEnd - p < 12 || buf[p] !== 0x48 || buf[p + 1] !== 0x54 || buf[p + 2] !== 0x54 ||
    buf[p + 3] !== 0x50 || buf[p + 4] !== 0x2f || buf[p + 5] !== 0x31 || buf[p + 6] !== 0x2e ||
    (buf[p + 7] !== 0x30 && buf[p + 7] !== 0x31) || buf[p + 8] !== SP
  ) {
    throw fail('bad_gateway', 'invalid status line');
  }
  const versionMinor = buf[p + 7] === 0x31 ? 1 : 0;
  const d0 = buf[p + 9] - 0x30;
  const d1 = buf[p + 10] - 0x30;
  const d2 = buf[p + 11] - 0x30;
  if (d0 < 1 || d0 > 9 || d1 < 0 || d1 > 9 || d2 < 0 || d2 > 9) throw fail('bad_gateway', 'invalid status code');
  const status = d0 * 100 + d1 * 10 + d2;
  let reason = '';
  if (lineEnd > p + 12) {
    if (buf[p + 12] !== SP) throw fail('bad_gateway', 'invalid status line');
    for (let i = p + 13; i < lineEnd; i++) {
      if (FIELD_VALUE[buf[i]] !== 1) throw fail('bad_gateway', 'invalid reason phrase');
    }
    reason = (buf as Latin1).latin1Slice(p + 13, lineEnd);
  }

  const headers: string[] = [];
  parseFields(buf, lineEnd + 2, end - 2, headers);
  let contentLength = -1;
  let te: string | undefined;
  let connection = '';
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i];
    if (name === 'content-length') {
      if (contentLength !== -1) throw fail('bad_gateway', 'more than one Content-Length');
      contentLength = contentLengthOf(headers[i + 1]);
      if (contentLength < 0) throw fail('bad_gateway', 'invalid Content-Length');
    } else if (name === 'transfer-encoding') {
      te = te === undefined ? headers[i + 1] : `${te},${headers[i + 1]}`;
    } else if (name === 'connection') {
      connection = connection === '' ? headers[i + 1] : `${connection},${headers[i + 1]}`;
    }
  }
  // Syntax is checked on every response, even where the fields do not frame the body.
  let codings: Codings = Codings.Invalid;
  if (te !== undefined) {
    if (contentLength !== -1) throw fail('bad_gateway', 'Transfer-Encoding with Content-Length');
    if (versionMinor === 0) throw fail('bad_gateway', 'Transfer-Encoding in an HTTP/1.0 response');
    codings = codingsOf(te);
    if (codings === Codings.Invalid) throw fail('bad_gateway', 'invalid Transfer-Encoding');
    // The gateway removes chunked framing and sends the body on; a coding under it would be lost.
    if (codings === Codings.OtherThenChunked) throw fail('bad_gateway', 'transfer coding other than chunked');
  }

  const close = listHas(connection, 'close');
  let keepAlive = versionMinor === 1 ? !close : !close && listHas(connection, 'keep-alive');
  let framing: Framing;
  if (status === 101) {
    if ((answerTo & AnswerTo.Upgrade) === 0) throw fail('bad_gateway', '101 without an Upgrade request');
    framing = Framing.Tunnel;
  } else if ((answerTo & AnswerTo.Connect) !== 0 && status >= 200 && status < 300) {
    framing = Framing.Tunnel;
  } else if (status < 200 || status === 204 || status === 304 || (answerTo & AnswerTo.Head) !== 0) {
    framing = Framing.None;
  } else if (te !== undefined) {
    framing = codings === Codings.Chunked ? Framing.Chunked : Framing.Close;
  } else if (contentLength >= 0) {
    framing = contentLength === 0 ? Framing.None : Framing.Length;
  } else {
    framing = Framing.Close;
  }
  if (framing === Framing.Close || framing === Framing.Tunnel) keepAlive = false;
  return { status, reason, versionMinor, headers, contentLength, framing, keepAlive };
}
