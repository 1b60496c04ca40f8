/**
 * The incremental request parser: bytes in (`feed`), events out (`next`), for any split of the
 * stream into chunks. Pull-based so that the connection decides when to read the next request
 * of a pipeline; an event is a small integer and its data sits on the parser, so the hot path
 * allocates nothing beyond the head's strings.
 */
import { ChunkStep, ChunkedDecoder } from './chunked.ts';
import { fail } from './chars.ts';
import { parseHead, type RequestHead } from './head.ts';

/** Limits of the codec; the listener passes its config keys. */
export interface ParserOptions {
  /** The whole request head, request line included (default 16 KiB): beyond it 431. */
  maxHeaderSize?: number;
  /** The request line alone (default 8 KiB, capped at `maxHeaderSize`): beyond it 414. */
  maxRequestLine?: number;
  /** The body (0 = none, the default): beyond it 413. Also bounds chunked bodies. */
  maxBodySize?: number;
}

/** The events of `RequestParser.next`. */
export const ParseEvent = {
  /** Give the parser more bytes. */
  NeedMore: 0,
  /** `parser.head` holds a new request head. */
  Head: 1,
  /** `parser.body` holds the next body slice (a view into the fed chunk). */
  Body: 2,
  /** The request ended; `parser.trailers` holds any chunked trailers. */
  End: 3,
  /** An upgrade or CONNECT request ended: `resume()` to parse HTTP again, or `takeRest()`. */
  Paused: 4,
  /** The last request did not keep the connection alive: no further request is parsed. */
  Closed: 5,
} as const;
/** @example if (parser.next() === ParseEvent.Head) route(parser.head); */
export type ParseEvent = (typeof ParseEvent)[keyof typeof ParseEvent];

const HEAD = 0;
const BODY_LENGTH = 1;
const BODY_CHUNKED = 2;
const END = 3;
const PAUSED = 4;
const FAILED = 5;
const CLOSED = 6;

const CR = 13;
const LF = 10;
const EMPTY = Buffer.alloc(0);

/**
 * A strict HTTP/1.1 request parser for one connection. A refused request throws
 * `HttpParseError` (status and code of the contract) and every later call throws it again.
 *
 * @example
 * const parser = new RequestParser({ maxHeaderSize: 16384 });
 * socket.on('data', (chunk) => {
 *   parser.feed(chunk);
 *   for (let ev = parser.next(); ev !== ParseEvent.NeedMore; ev = parser.next()) {
 *     if (ev === ParseEvent.Head) start(parser.head);
 *     else if (ev === ParseEvent.Body) forward(parser.body);
 *     else if (ev === ParseEvent.End) finish(parser.trailers);
 *     else break; // Paused: an upgrade
 *   }
 * });
 */
export class RequestParser {
  head: RequestHead | undefined;
  body: Buffer = EMPTY;
  trailers: string[] | undefined;

  private buf: Buffer = EMPTY;
  private pos = 0;
  private end = 0;
  /** `buf` was allocated here (grown by appending), not a chunk from the caller. */
  private owned = false;
  private state = HEAD;
  private scan = 0;
  private lastLf = -1;
  private lineEnd = -1;
  private remaining = 0;
  private chunked: ChunkedDecoder | undefined;
  private error: Error | undefined;
  private readonly maxHeaderSize: number;
  private readonly maxRequestLine: number;
  private readonly maxBodySize: number;

  constructor(options: ParserOptions = {}) {
    this.maxHeaderSize = options.maxHeaderSize ?? 16 * 1024;
    this.maxRequestLine = Math.min(options.maxRequestLine ?? 8 * 1024, this.maxHeaderSize);
    this.maxBodySize = options.maxBodySize ?? 0;
    this.resetHead();
  }

  /** Adds bytes. The chunk is used in place (body slices are views of it): do not reuse it. */
  feed(chunk: Buffer): void {
    const left = this.end - this.pos;
    if (left === 0) {
      this.buf = chunk;
      this.owned = false;
      this.pos = 0;
      this.end = chunk.length;
      this.scan = 0;
      this.lastLf = this.lineEnd = -1;
      return;
    }
    // A head or chunk line split across chunks: append into a buffer grown by doubling, so a
    // client sending one byte at a time costs linear, not quadratic, copying.
    if (this.owned && this.end + chunk.length <= this.buf.length) {
      chunk.copy(this.buf, this.end);
      this.end += chunk.length;
      return;
    }
    const next = Buffer.allocUnsafe(Math.max(2 * (left + chunk.length), 1024));
    this.buf.copy(next, 0, this.pos, this.end);
    chunk.copy(next, left);
    const shift = this.pos;
    this.scan -= shift;
    if (this.lastLf >= 0) this.lastLf -= shift;
    if (this.lineEnd >= 0) this.lineEnd -= shift;
    this.buf = next;
    this.owned = true;
    this.pos = 0;
    this.end = left + chunk.length;
  }

  /** The next event; throws `HttpParseError` when the request is refused. */
  next(): ParseEvent {
    if (this.error !== undefined) throw this.error;
    try {
      return this.step();
    } catch (err) {
      this.error = err as Error;
      this.state = FAILED;
      throw err;
    }
  }

  /** After `Paused`: parse the following bytes as a new request (the upgrade was refused). */
  resume(): void {
    if (this.state === PAUSED) this.startHead();
  }

  /** After `Paused`: the bytes that followed the request, for a tunnel. The parser is spent. */
  takeRest(): Buffer {
    const rest = this.buf.subarray(this.pos, this.end);
    this.buf = EMPTY;
    this.pos = this.end = 0;
    return rest;
  }

  private step(): ParseEvent {
    switch (this.state) {
      case HEAD:
        return this.readHead();
      case BODY_LENGTH: {
        if (this.pos >= this.end) return this.needMore();
        const n = Math.min(this.remaining, this.end - this.pos);
        this.body = this.buf.subarray(this.pos, this.pos + n);
        this.pos += n;
        this.remaining -= n;
        if (this.remaining === 0) this.state = END;
        return ParseEvent.Body;
      }
      case BODY_CHUNKED: {
        const dec = this.chunked!;
        const s = dec.step(this.buf, this.pos, this.end);
        this.pos = dec.pos;
        if (s === ChunkStep.Data) {
          this.body = this.buf.subarray(dec.dataStart, dec.dataEnd);
          return ParseEvent.Body;
        }
        if (s === ChunkStep.NeedMore) return this.needMore();
        this.trailers = dec.trailers;
        return this.finish();
      }
      case END:
        return this.finish();
      case PAUSED:
        return ParseEvent.Paused;
      case CLOSED:
        // As llhttp: bytes after a request that closes the connection are never a request.
        return ParseEvent.Closed;
      default:
        throw this.error ?? fail('bad_request', 'parser failed');
    }
  }

  private finish(): ParseEvent {
    this.chunked = undefined;
    this.body = EMPTY;
    const head = this.head!;
    if (head.upgrade) this.state = PAUSED;
    else if (!head.keepAlive) this.state = CLOSED;
    else this.startHead();
    return ParseEvent.End;
  }

  /** Finds the head's end by hopping from LF to LF (native indexOf), checking each is CRLF. */
  private readHead(): ParseEvent {
    const { buf, pos, end } = this;
    let i = this.scan;
    for (;;) {
      const lf = buf.indexOf(LF, i);
      if (lf < 0 || lf >= end) break;
      if (lf === pos || buf[lf - 1] !== CR) throw fail('bad_request', 'bare LF');
      if (this.lineEnd < 0) {
        if (lf === pos + 1) throw fail('bad_request', 'empty request line');
        if (lf - 1 - pos > this.maxRequestLine) throw fail('uri_too_long', 'request line too long');
        this.lineEnd = lf - 1;
      } else if (lf - 2 === this.lastLf) {
        if (lf + 1 - pos > this.maxHeaderSize) throw fail('headers_too_large', 'request head too large');
        this.head = parseHead(buf, pos, this.lineEnd, lf + 1);
        this.pos = lf + 1;
        this.trailers = undefined;
        return this.startBody(this.head);
      }
      this.lastLf = lf;
      i = lf + 1;
    }
    this.scan = end;
    if (this.lineEnd < 0 && end - pos > this.maxRequestLine) throw fail('uri_too_long', 'request line too long');
    if (end - pos > this.maxHeaderSize) throw fail('headers_too_large', 'request head too large');
    return this.needMore();
  }

  private startBody(head: RequestHead): ParseEvent {
    if (head.chunked) {
      this.chunked = new ChunkedDecoder(this.maxHeaderSize, this.maxBodySize);
      this.state = BODY_CHUNKED;
    } else if (head.contentLength > 0) {
      if (this.maxBodySize > 0 && head.contentLength > this.maxBodySize) throw fail('body_too_large', 'body too large');
      this.remaining = head.contentLength;
      this.state = BODY_LENGTH;
    } else {
      this.state = END;
    }
    return ParseEvent.Head;
  }

  private startHead(): void {
    this.state = HEAD;
    this.resetHeadScan();
  }

  private resetHeadScan(): void {
    this.scan = this.pos;
    this.lastLf = this.lineEnd = -1;
  }

  private resetHead(): void {
    this.head = undefined;
    this.startHead();
  }

  private needMore(): ParseEvent {
    // Everything consumed: drop the chunk so the parser does not pin it in memory.
    if (this.pos >= this.end) {
      this.buf = EMPTY;
      this.pos = this.end = this.scan = 0;
      this.owned = false;
      this.lastLf = this.lineEnd = -1;
    }
    return ParseEvent.NeedMore;
  }
}
