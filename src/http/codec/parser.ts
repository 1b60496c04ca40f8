/**
 * The incremental request parser: bytes in (`feed`), events out (`next`), for any split of the
 * stream into chunks. Pull-based so that the connection decides when to read the next request
 * of a pipeline; an event is a small integer and its data sits on the parser, so the hot path
 * allocates nothing beyond the head's strings.
 */
import { fail } from './chars.ts';
import { parseHead, type RequestHead } from './head.ts';
import { Framing } from './response-head.ts';
import { MessageStream, State } from './stream.ts';

export { ParseEvent } from './stream.ts';

/** Limits of the codec; the listener passes its config keys. */
export interface ParserOptions {
  /** The whole request head, request line included (default 16 KiB): beyond it 431. */
  maxHeaderSize?: number;
  /** The request line alone (default 8 KiB, capped at `maxHeaderSize`): beyond it 414. */
  maxRequestLine?: number;
  /** The body (0 = none, the default): beyond it 413. Also bounds chunked bodies. */
  maxBodySize?: number;
}

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
export class RequestParser extends MessageStream<RequestHead> {
  private readonly maxRequestLine: number;

  constructor(options: ParserOptions = {}) {
    const maxHeaderSize = options.maxHeaderSize ?? 16 * 1024;
    super(maxHeaderSize, options.maxBodySize ?? 0);
    this.maxRequestLine = Math.min(options.maxRequestLine ?? 8 * 1024, maxHeaderSize);
  }

  /** After `Paused`: parse the following bytes as a new request (the upgrade was refused). */
  resume(): void {
    if (this.state === State.Paused) this.startHead();
  }

  protected checkStartLine(length: number, complete: boolean): void {
    if (complete && length === 0) throw fail('bad_request', 'empty request line');
    if (length > this.maxRequestLine) throw fail('uri_too_long', 'request line too long');
  }

  protected headTooLarge(): Error {
    return fail('headers_too_large', 'request head too large');
  }

  protected parseHeadAt(start: number, end: number): RequestHead {
    return parseHead(this.buf, start, this.lineEnd, end);
  }

  protected framingOf(head: RequestHead): Framing {
    if (head.chunked) return Framing.Chunked;
    if (head.contentLength <= 0) return Framing.None;
    if (this.maxBodySize > 0 && head.contentLength > this.maxBodySize) throw fail('body_too_large', 'body too large');
    return Framing.Length;
  }

  protected stateAfter(head: RequestHead): number {
    if (head.upgrade) return State.Paused;
    // As llhttp: bytes after a request that closes the connection are never a request.
    return head.keepAlive ? State.Head : State.Closed;
  }
}
