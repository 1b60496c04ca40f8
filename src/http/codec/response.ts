/**
 * The incremental parser of upstream responses: bytes in (`feed`, `eof`), events out (`next`),
 * for any split of the stream. Responses come in the order of the requests, so the connection
 * declares each request (`expect`) as it sends it; that decides the framing of HEAD, CONNECT and
 * Upgrade answers. Every invalid response throws `HttpParseError` with code `bad_gateway` (502).
 */
import { HttpParseError, fail } from './chars.ts';
import { Framing, parseResponseHead, type ResponseHead } from './response-head.ts';
import { MessageStream, ParseEvent, State } from './stream.ts';

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
export class ResponseParser extends MessageStream<ResponseHead> {
  private ended = false;
  /** `AnswerTo` bits of the requests sent and not yet answered, oldest at `first`. */
  private readonly pending: number[] = [];
  private first = 0;

  constructor(options: ResponseParserOptions = {}) {
    super(options.maxHeaderSize ?? 16 * 1024, 0);
  }

  /** Declares a request sent on the connection (`AnswerTo` bits), in sending order. */
  expect(answerTo: number): void {
    this.pending.push(answerTo);
  }

  /** Requests sent whose final response has not been fully parsed yet. */
  get outstanding(): number {
    return this.pending.length - this.first;
  }

  /**
   * The upstream closed its side (socket `'end'`): ends a close-delimited body, and is an error
   * inside any other head or body. Between responses it yields `Closed`; `outstanding` then
   * tells whether requests were left unanswered.
   */
  eof(): void {
    this.ended = true;
  }

  protected override refused(err: unknown): Error {
    // Field and chunk rules are shared with requests: from an upstream they all mean 502.
    return (err instanceof HttpParseError && err.code !== 'bad_gateway' ? fail('bad_gateway', err.message) : err) as Error;
  }

  protected checkStartLine(length: number, complete: boolean): void {
    if (complete && length === 0) throw fail('bad_gateway', 'empty status line');
  }

  protected headTooLarge(): Error {
    return fail('bad_gateway', 'response head too large');
  }

  protected parseHeadAt(start: number, end: number): ResponseHead {
    if (this.first === this.pending.length) throw fail('bad_gateway', 'response without a request');
    return parseResponseHead(this.buf, start, this.lineEnd, end, this.pending[this.first]);
  }

  protected framingOf(head: ResponseHead): Framing {
    return head.framing;
  }

  protected stateAfter(head: ResponseHead): number {
    if (head.status >= 200 || head.status === 101) {
      // The final response: its request is answered.
      if (++this.first === this.pending.length) this.pending.length = this.first = 0;
      // A pipeline that never drains must not grow the queue for ever.
      else if (this.first >= 64) {
        this.pending.splice(0, this.first);
        this.first = 0;
      }
    }
    if (head.framing === Framing.Tunnel) return State.Paused;
    return head.status >= 200 && !head.keepAlive ? State.Closed : State.Head;
  }

  protected override needMore(): ParseEvent {
    if (this.ended) {
      // FIN: it ends a close-delimited body and nothing else; between responses it is Closed.
      if (this.state === State.BodyClose) return this.finish();
      if (this.state !== State.Head || this.pos < this.end) throw fail('bad_gateway', 'upstream closed mid-response');
      this.state = State.Closed;
      return ParseEvent.Closed;
    }
    return super.needMore();
  }
}
