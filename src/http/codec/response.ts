/**
 * The incremental parser of upstream responses: bytes in (`feed`, `eof`), events out (`next`),
 * for any split of the stream. Responses come in the order of the requests, so the connection
 * declares each request (`expect`) as it sends it; that decides the framing of HEAD, CONNECT and
 * Upgrade answers. Every invalid response throws `HttpParseError` with code `bad_gateway` (502).
 */
import { ChunkStep, ChunkedDecoder } from './chunked.ts';
import { HttpParseError, fail } from './chars.ts';
import { Framing, parseResponseHead, type ResponseHead } from './response-head.ts';
import { ParseEvent } from './parser.ts';

/**
 * Limits of the response parser; the listener passes its `maxHeaderSize`.
 *
 * @example
 * new ResponseParser({ maxHeaderSize: 16 * 1024 });
 */
export interface ResponseParserOptions {
  /** The whole response head, status line included, and the trailers (default 16 KiB). */
  maxHeaderSize?: number;
}

const HEAD = 0;
const BODY_LENGTH = 1;
const BODY_CHUNKED = 2;
const BODY_CLOSE = 3;
const END = 4;
const PAUSED = 5;
const FAILED = 6;
const CLOSED = 7;

const CR = 13;
const LF = 10;
const EMPTY = Buffer.alloc(0);

/**
 * A strict HTTP/1.1 response parser for one upstream connection. Events are `ParseEvent`s:
 * `Head` (also for each 1xx, which is followed by `End` and then the real response), `Body`
 * (a view of the fed chunk), `End`, `Paused` (after a 101 or a 2xx to CONNECT: `takeRest()`
 * holds the tunnel's first bytes), `Closed` (no further response on this connection).
 *
 * @example
 * const parser = new ResponseParser();
 * parser.expect(AnswerTo.Plain); // as the request is written
 * upstream.on('data', (chunk) => { parser.feed(chunk); drain(); });
 * upstream.on('end', () => { parser.eof(); drain(); });
 * function drain() {
 *   for (let ev = parser.next(); ev !== ParseEvent.NeedMore; ev = parser.next()) {
 *     if (ev === ParseEvent.Head) sendHead(parser.head);
 *     else if (ev === ParseEvent.Body) sendBody(parser.body);
 *     else if (ev === ParseEvent.End) finish(parser.trailers);
 *     else break; // Paused (tunnel) or Closed
 *   }
 * }
 */
export class ResponseParser {
  head: ResponseHead | undefined;
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
  private ended = false;
  /** `AnswerTo` bits of the requests sent and not yet answered, oldest at `first`. */
  private readonly pending: number[] = [];
  private first = 0;
  private readonly maxHeaderSize: number;

  constructor(options: ResponseParserOptions = {}) {
    this.maxHeaderSize = options.maxHeaderSize ?? 16 * 1024;
  }

  /** Declares a request sent on the connection (`AnswerTo` bits), in sending order. */
  expect(answerTo: number): void {
    this.pending.push(answerTo);
  }

  /** Requests sent whose final response has not been fully parsed yet. */
  get outstanding(): number {
    return this.pending.length - this.first;
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
    // A head or chunk line split across chunks: grow by doubling so that an upstream sending
    // one byte at a time costs linear, not quadratic, copying.
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

  /**
   * The upstream closed its side (socket `'end'`): ends a close-delimited body, and is an error
   * inside any other head or body. Between responses it yields `Closed`; `outstanding` then
   * tells whether requests were left unanswered.
   */
  eof(): void {
    this.ended = true;
  }

  /** The next event; throws `HttpParseError` (`bad_gateway`) on an invalid response. */
  next(): ParseEvent {
    if (this.error !== undefined) throw this.error;
    try {
      return this.step();
    } catch (err) {
      // Field and chunk rules are shared with requests: from an upstream they all mean 502.
      const e = err instanceof HttpParseError && err.code !== 'bad_gateway' ? fail('bad_gateway', err.message) : err;
      this.error = e as Error;
      this.state = FAILED;
      throw e;
    }
  }

  /** After `Paused`: the bytes that followed the head, for the tunnel. The parser is spent. */
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
      case BODY_CLOSE:
        if (this.pos >= this.end) return this.needMore();
        this.body = this.buf.subarray(this.pos, this.end);
        this.pos = this.end;
        return ParseEvent.Body;
      case END:
        return this.finish();
      case PAUSED:
        return ParseEvent.Paused;
      case CLOSED:
        return ParseEvent.Closed;
      default:
        throw this.error ?? fail('bad_gateway', 'parser failed');
    }
  }

  private finish(): ParseEvent {
    this.chunked = undefined;
    this.body = EMPTY;
    const head = this.head!;
    if (head.status >= 200 || head.status === 101) {
      // The final response: its request is answered.
      if (++this.first === this.pending.length) this.pending.length = this.first = 0;
      // A pipeline that never drains must not grow the queue for ever.
      else if (this.first >= 64) {
        this.pending.splice(0, this.first);
        this.first = 0;
      }
    }
    if (head.framing === Framing.Tunnel) this.state = PAUSED;
    else if (head.status >= 200 && !head.keepAlive) this.state = CLOSED;
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
      if (lf === pos || buf[lf - 1] !== CR) throw fail('bad_gateway', 'bare LF');
      if (this.lineEnd < 0) {
        if (lf === pos + 1) throw fail('bad_gateway', 'empty status line');
        this.lineEnd = lf - 1;
      } else if (lf - 2 === this.lastLf) {
        if (lf + 1 - pos > this.maxHeaderSize) throw fail('bad_gateway', 'response head too large');
        if (this.first === this.pending.length) throw fail('bad_gateway', 'response without a request');
        const head = parseResponseHead(buf, pos, this.lineEnd, lf + 1, this.pending[this.first]);
        this.head = head;
        this.pos = lf + 1;
        this.trailers = undefined;
        this.startBody(head);
        return ParseEvent.Head;
      }
      this.lastLf = lf;
      i = lf + 1;
    }
    this.scan = end;
    if (end - pos > this.maxHeaderSize) throw fail('bad_gateway', 'response head too large');
    return this.needMore();
  }

  private startBody(head: ResponseHead): void {
    switch (head.framing) {
      case Framing.Length:
        this.remaining = head.contentLength;
        this.state = BODY_LENGTH;
        break;
      case Framing.Chunked:
        this.chunked = new ChunkedDecoder(this.maxHeaderSize, 0);
        this.state = BODY_CHUNKED;
        break;
      case Framing.Close:
        this.state = BODY_CLOSE;
        break;
      default:
        this.state = END;
    }
  }

  private startHead(): void {
    this.state = HEAD;
    this.scan = this.pos;
    this.lastLf = this.lineEnd = -1;
  }

  private needMore(): ParseEvent {
    if (this.ended) {
      // FIN: it ends a close-delimited body and nothing else; between responses it is Closed.
      if (this.state === BODY_CLOSE) return this.finish();
      if (this.state !== HEAD || this.pos < this.end) throw fail('bad_gateway', 'upstream closed mid-response');
      this.state = CLOSED;
      return ParseEvent.Closed;
    }
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
