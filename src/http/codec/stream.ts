/**
 * What the request and response parsers share: the byte window over the fed chunks, the scan
 * for the end of a head, the framed body steps and the error latch. Each parser extends
 * `MessageStream` with its own rules for the start line, the head and what follows a message.
 */
import { ChunkStep, ChunkedDecoder } from './chunked.ts';
import { fail } from './chars.ts';
import { Framing } from './response-head.ts';

/** The events of `RequestParser.next` and `ResponseParser.next`. */
export const ParseEvent = {
  /** Give the parser more bytes. */
  NeedMore: 0,
  /** `parser.head` holds a new head. */
  Head: 1,
  /** `parser.body` holds the next body slice (a view into the fed chunk). */
  Body: 2,
  /** The message ended; `parser.trailers` holds any chunked trailers. */
  End: 3,
  /** An upgrade or CONNECT ended: `takeRest()` for the tunnel (a request parser can `resume()`). */
  Paused: 4,
  /** The last message did not keep the connection alive: nothing further is parsed. */
  Closed: 5,
} as const;
/** @example if (parser.next() === ParseEvent.Head) route(parser.head); */
export type ParseEvent = (typeof ParseEvent)[keyof typeof ParseEvent];

const CR = 13;
const LF = 10;
const EMPTY = Buffer.alloc(0);

/** The states of a `MessageStream` (the parsers' `state`). `BodyClose` is for responses only. */
export const State = { Head: 0, BodyLength: 1, BodyChunked: 2, BodyClose: 3, End: 4, Paused: 5, Failed: 6, Closed: 7 } as const;

/**
 * The machinery of an incremental HTTP/1.1 message parser; `H` is the head type. A subclass
 * says how a start line is checked, how a head is parsed and framed, and what state follows
 * the end of a message. The first error is latched: every later `next()` throws it again.
 *
 * @example
 * class HeadOnly extends MessageStream<RequestHead> {
 *   protected parseHeadAt(start: number, end: number) { return parseHead(this.buf, start, this.lineEnd, end); }
 *   protected framingOf() { return Framing.None; } // and checkStartLine, headTooLarge, stateAfter
 * }
 */
export abstract class MessageStream<H extends { contentLength: number }> {
  head: H | undefined;
  body: Buffer = EMPTY;
  trailers: string[] | undefined;

  protected buf: Buffer = EMPTY;
  protected pos = 0;
  protected end = 0;
  /** `buf` was allocated here (grown by appending), not a chunk from the caller. */
  protected owned = false;
  protected state: number = State.Head;
  protected scan = 0;
  protected lastLf = -1;
  /** The CR closing the start line, or -1 while it is incomplete. */
  protected lineEnd = -1;
  protected remaining = 0;
  protected chunked: ChunkedDecoder | undefined;
  protected error: Error | undefined;
  protected readonly maxHeaderSize: number;
  /** Bounds chunked bodies too (0 = no limit). */
  protected readonly maxBodySize: number;

  constructor(maxHeaderSize: number, maxBodySize: number) {
    this.maxHeaderSize = maxHeaderSize;
    this.maxBodySize = maxBodySize;
  }

  /** Bytes fed and not yet consumed by `next()` (a pipelined request waiting its turn). */
  get buffered(): number {
    return this.end - this.pos;
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
    // peer sending one byte at a time costs linear, not quadratic, copying.
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

  /** The next event; throws `HttpParseError` when the message is refused. */
  next(): ParseEvent {
    if (this.error !== undefined) throw this.error;
    try {
      return this.step();
    } catch (err) {
      const e = this.refused(err);
      this.error = e;
      this.state = State.Failed;
      throw e;
    }
  }

  /** After `Paused`: the bytes that followed the message, for a tunnel. The parser is spent. */
  takeRest(): Buffer {
    const rest = this.buf.subarray(this.pos, this.end);
    this.buf = EMPTY;
    this.pos = this.end = 0;
    return rest;
  }

  /** Refuses a start line of `length` bytes (`complete` false: the part received so far). */
  protected abstract checkStartLine(length: number, complete: boolean): void;
  /** The error for a head longer than `maxHeaderSize`. */
  protected abstract headTooLarge(): Error;
  /** Parses the complete head `buf[start, end)`; `lineEnd` is set. */
  protected abstract parseHeadAt(start: number, end: number): H;
  /** How the body of `head` is delimited; may refuse it. */
  protected abstract framingOf(head: H): Framing;
  /** What follows the end of the message of `head`: `State.Head`, `Paused` or `Closed`. */
  protected abstract stateAfter(head: H): number;

  /** The error the latch keeps for `err`, thrown while parsing. */
  protected refused(err: unknown): Error {
    return err as Error;
  }

  protected step(): ParseEvent {
    switch (this.state) {
      case State.Head:
        return this.readHead();
      case State.BodyLength: {
        if (this.pos >= this.end) return this.needMore();
        const n = Math.min(this.remaining, this.end - this.pos);
        this.body = this.buf.subarray(this.pos, this.pos + n);
        this.pos += n;
        this.remaining -= n;
        if (this.remaining === 0) this.state = State.End;
        return ParseEvent.Body;
      }
      case State.BodyChunked: {
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
      case State.BodyClose:
        if (this.pos >= this.end) return this.needMore();
        this.body = this.buf.subarray(this.pos, this.end);
        this.pos = this.end;
        return ParseEvent.Body;
      case State.End:
        return this.finish();
      case State.Paused:
        return ParseEvent.Paused;
      case State.Closed:
        // As llhttp: bytes after a message that closes the connection are never a message.
        return ParseEvent.Closed;
      default:
        throw this.error ?? fail('bad_request', 'parser failed');
    }
  }

  protected finish(): ParseEvent {
    this.chunked = undefined;
    this.body = EMPTY;
    const next = this.stateAfter(this.head!);
    if (next === State.Head) this.startHead();
    else this.state = next;
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
        this.checkStartLine(lf - 1 - pos, true);
        this.lineEnd = lf - 1;
      } else if (lf - 2 === this.lastLf) {
        if (lf + 1 - pos > this.maxHeaderSize) throw this.headTooLarge();
        const head = this.parseHeadAt(pos, lf + 1);
        this.head = head;
        this.pos = lf + 1;
        this.trailers = undefined;
        this.startBody(this.framingOf(head), head.contentLength);
        return ParseEvent.Head;
      }
      this.lastLf = lf;
      i = lf + 1;
    }
    this.scan = end;
    if (this.lineEnd < 0) this.checkStartLine(end - pos, false);
    if (end - pos > this.maxHeaderSize) throw this.headTooLarge();
    return this.needMore();
  }

  private startBody(framing: Framing, contentLength: number): void {
    switch (framing) {
      case Framing.Length:
        this.remaining = contentLength;
        this.state = State.BodyLength;
        break;
      case Framing.Chunked:
        this.chunked = new ChunkedDecoder(this.maxHeaderSize, this.maxBodySize);
        this.state = State.BodyChunked;
        break;
      case Framing.Close:
        this.state = State.BodyClose;
        break;
      default:
        this.state = State.End;
    }
  }

  protected startHead(): void {
    this.state = State.Head;
    this.scan = this.pos;
    this.lastLf = this.lineEnd = -1;
  }

  protected needMore(): ParseEvent {
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
