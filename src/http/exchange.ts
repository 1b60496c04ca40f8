/**
 * One HTTP request/response exchange of a client connection: a plain object (not an actor: an
 * exchange lives a few hundred microseconds, and a connection carries them one at a time). It
 * holds what the request needs from routing to the access log, writes the request to the
 * upstream socket it was given, parses the response and writes it to the client with
 * backpressure both ways. What to do on a failure (retry, gateway answer, reset) is decided by
 * its connection, through {@link ExchangeOwner}.
 */
import type net from 'node:net';
import type { RequestHead } from './codec/head.ts';
import { AnswerTo, Framing, type ResponseHead } from './codec/response-head.ts';
import { ResponseParser } from './codec/response.ts';
import { ParseEvent } from './codec/stream.ts';
import { CHUNKED, NO_BODY, serializeResponseHead } from './middleware/serialize.ts';
import { prepareResponse, type Exchange } from './middleware/headers.ts';
import type { PooledConnection, UpstreamPool } from './pool.ts';
import type { CompiledRoute } from './routes.ts';
import type { ShardBackend } from '../workers/shard-config.ts';
import type { HttpUpstream } from './upstreams.ts';
import type { Span } from '@opentelemetry/api';

/** Request bodies up to this size are kept to send again on a retry; a larger one is not retried. */
export const REPLAY_MAX = 64 * 1024;

const CRLF = Buffer.from('\r\n');
/** A response body slice up to this size read with its head is copied after it, for one write. */
const COALESCE_MAX = 16 * 1024;

const kTimeout = Symbol('gatehouse.upstreamTimeout');
type TimedSocket = net.Socket & { [kTimeout]?: number };

/** `socket.setTimeout(ms)` unless it runs at `ms` already (a pooled socket keeps its value across requests). */
function armTimeout(s: TimedSocket, ms: number): void {
  if (s[kTimeout] === ms) return;
  s[kTimeout] = ms;
  s.setTimeout(ms);
}
const LAST_CHUNK = Buffer.from('0\r\n\r\n');

/** Where an exchange is: numbers, compared on the hot path. */
export const Phase = {
  /** Routed, waiting for auth, the rate limit or a pooled socket. */
  Dispatching: 0,
  /** Request head written; waiting for the response head. */
  Sent: 1,
  /** Response head written to the client; streaming its body. */
  Responding: 2,
  /** Answered by the gateway; the rest of the request body is read and dropped. */
  Answered: 3,
  Done: 4,
} as const;

/**
 * What an exchange calls on its connection. `failed` is a failure before any response byte
 * reached the client (the connection may retry or answer); after that, `broken` (reset).
 */
export interface ExchangeOwner {
  readonly client: net.Socket;
  /** The response head was written to the client. */
  responded(ex: HttpExchange): void;
  /** The response ended; `reusable`: the upstream socket may serve another request. */
  finished(ex: HttpExchange, reusable: boolean): void;
  /** The upstream failed before the response started: `reset` (closed or refused mid-way), `timeout`, `invalid` (a bad response) or `status` (a `retryOn` status). */
  failed(ex: HttpExchange, why: 'reset' | 'timeout' | 'invalid' | 'status', err?: Error): void;
  /**
   * Whether the retry budget lets this exchange retry (and reserves its place when it does):
   * asked before a `retryOn` status is turned into a retry, so that a status that cannot be
   * retried reaches the client as the backend sent it, body included.
   */
  mayRetry(ex: HttpExchange): boolean;
  /** The upstream failed mid-response: the client connection must be reset. */
  broken(ex: HttpExchange, err?: Error): void;
  /** A 101 to an upgrade: from here both sockets are a tunnel; `rest` are the upstream's first tunnel bytes. */
  upgraded(ex: HttpExchange, rest: Buffer): void;
}

/**
 * One exchange. Created at the request head, dropped at the response end.
 *
 * @example
 * const ex = new HttpExchange(head, route, requestId, performance.now());
 * ex.send(conn, pool, headBuffer, framing);
 */
export class HttpExchange {
  readonly head: RequestHead;
  readonly route: CompiledRoute | undefined;
  readonly requestId: string;
  readonly startedAt: number;
  phase: number = Phase.Dispatching;
  status = 0;
  upstream: HttpUpstream | undefined;
  backend: ShardBackend | undefined;
  /** The balancer's half-open trial permit taken with {@link backend}. */
  trial = false;
  conn: PooledConnection<unknown> | undefined;
  pool: UpstreamPool<unknown> | undefined;
  /** Backends tried and failed, for the next pick. */
  tried: ShardBackend[] | undefined;
  /** Retries made (route `retries`, connect failures). */
  attempts = 0;
  /** Counted in the shard's retry budget right now. */
  inBudget = false;
  /** Counted in the dispatcher's requests in flight. */
  dispatched = false;
  /** Counted in its backend's active count (least_connections) for the current attempt. */
  counted = false;
  /** Already sent again on a fresh socket after the keep-alive race (once per exchange). */
  freshRetry = false;
  /** The serialised request (head and body so far) while it fits {@link REPLAY_MAX}: what a retry sends again. */
  replay: Buffer[] | undefined = [];
  replayBytes = 0;
  /** The whole request body was read from the client. */
  requestDone = false;
  /** The client's body is chunked and re-encoded (chunked) upstream. */
  chunkedIn = false;
  /** Response body bytes go out chunked (re-encoded) / close-delimited. */
  chunkOut = false;
  closeOut = false;
  /** The upstream socket cannot take more now (the client is paused). */
  upstreamFull = false;
  /** The client socket cannot take more now (the upstream is paused). */
  clientFull = false;
  /** The gateway sent `100 Continue` itself. */
  sentContinue = false;
  /** Body slices read ahead with the head, before the request had an upstream socket: {@link send} writes them after the head. */
  early: Buffer[] | undefined;
  /** The body's end was read ahead too: its trailers (`null`: none). */
  earlyEnd: readonly string[] | null | undefined;
  bytesIn = 0;
  bytesOut = 0;
  /** The request's SERVER span while tracing is on (`telemetry.otlp`); ended with the exchange. */
  span: Span | undefined = undefined;
  parser: ResponseParser | undefined;
  /** The response head, held until the body bytes read with it can go in the same write. */
  private pendingHead: Buffer | undefined = undefined;
  /** The upstream's silence while streaming was allowed `timeoutMs` first, then the rest of `idleTimeoutMs` (see {@link idleExtension}). */
  private idleExtended = false;

  constructor(head: RequestHead, route: CompiledRoute | undefined, requestId: string, startedAt: number) {
    this.head = head;
    this.route = route;
    this.requestId = requestId;
    this.startedAt = startedAt;
    this.chunkedIn = head.chunked;
  }

  /** `AnswerTo` bits of this request for the response parser. */
  answerTo(): number {
    const m = this.head.method;
    return (m === 'HEAD' ? AnswerTo.Head : 0) | (m === 'CONNECT' ? AnswerTo.Connect : 0) | (this.head.upgrade ? AnswerTo.Upgrade : 0);
  }

  /** Keeps `b` for a retry while the request fits {@link REPLAY_MAX}. */
  keep(b: Buffer): void {
    if (this.replay === undefined) return;
    this.replayBytes += b.length;
    if (this.replayBytes > REPLAY_MAX) this.replay = undefined;
    else this.replay.push(b);
  }

  /**
   * Writes what the request has so far to `conn` (the kept head and body for a first send or a
   * retry) and starts reading its response. `maxHeaderSize` bounds the response head.
   */
  send(conn: PooledConnection<unknown>, maxHeaderSize: number): void {
    this.conn = conn;
    this.phase = Phase.Sent;
    this.parser = new ResponseParser({ maxHeaderSize });
    this.parser.expect(this.answerTo());
    const s = conn.socket;
    const parts = this.replay!;
    let ok = true;
    if (parts.length === 1) ok = s.write(parts[0]!);
    else {
      s.cork();
      for (let i = 0; i < parts.length; i++) ok = s.write(parts[i]!);
      s.uncork();
    }
    this.upstreamFull = !ok;
    const early = this.early;
    if (early !== undefined) {
      // First send: the body read ahead follows the head (and is kept for a retry from here).
      this.early = undefined;
      for (let i = 0; i < early.length; i++) this.body(early[i]!);
    }
    if (this.earlyEnd !== undefined) {
      const trailers = this.earlyEnd ?? undefined;
      this.earlyEnd = undefined;
      this.end(trailers);
    }
    armTimeout(s, this.route!.timeoutMs);
  }

  /** Writes a request body slice upstream (chunk-encoded when the client sent chunks); false: wait for drain. */
  body(data: Buffer): boolean {
    if (this.conn === undefined) {
      // Read ahead before the request has a socket: sent after its head.
      (this.early ??= []).push(data);
      return true;
    }
    this.bytesIn += data.length;
    const s = this.conn!.socket;
    let ok: boolean;
    if (this.chunkedIn) {
      const size = Buffer.from(`${data.length.toString(16)}\r\n`, 'latin1');
      s.cork();
      s.write(size);
      s.write(data);
      ok = s.write(CRLF);
      s.uncork();
      this.keep(size);
      this.keep(data);
      this.keep(CRLF);
    } else {
      ok = s.write(data);
      this.keep(data);
    }
    if (!ok) this.upstreamFull = true;
    return ok;
  }

  /** The request body ended: the last chunk and trailers when chunked. */
  end(trailers: readonly string[] | undefined): void {
    this.requestDone = true;
    if (this.conn === undefined) {
      this.earlyEnd = trailers ?? null;
      return;
    }
    if (!this.chunkedIn) return;
    const last = trailerBlock(trailers);
    this.conn!.socket.write(last);
    this.keep(last);
  }

  /**
   * Response bytes from the upstream (a copy the exchange may keep). Returns false to stop
   * reading the upstream until the client drains.
   */
  read(owner: ExchangeOwner, chunk: Buffer, mw: Exchange, out: string[], closeAfter: boolean): boolean {
    const p = this.parser!;
    p.feed(chunk);
    return this.pump(owner, mw, out, closeAfter);
  }

  /** The upstream sent its FIN: ends a close-delimited body. */
  eof(owner: ExchangeOwner, mw: Exchange, out: string[], closeAfter: boolean): void {
    this.parser!.eof();
    this.pump(owner, mw, out, closeAfter);
  }

  pump(owner: ExchangeOwner, mw: Exchange, out: string[], closeAfter: boolean): boolean {
    const p = this.parser!;
    const c = owner.client;
    c.cork();
    try {
      for (;;) {
        let ev: ParseEvent;
        try {
          ev = p.next();
        } catch (err) {
          if (this.phase === Phase.Responding) owner.broken(this, err as Error);
          else owner.failed(this, 'invalid', err as Error);
          return false;
        }
        switch (ev) {
          case ParseEvent.NeedMore:
            return !this.clientFull;
          case ParseEvent.Head: {
            const h = p.head!;
            if (h.status < 200 && h.status !== 101) {
              this.informational(c, h, mw, out);
              continue;
            }
            if (this.phase !== Phase.Sent) return false;
            const r = this.route!;
            if (h.status >= 502 && h.status <= 504 && this.retryableStatus(h.status) && owner.mayRetry(this)) {
              this.status = h.status;
              owner.failed(this, 'status');
              return false;
            }
            this.respond(h, mw, out, closeAfter);
            // The socket's inactivity timer runs at `timeout` already: only a shorter idleTimeout
            // is armed now; a longer one is made up when the timer fires (idleExtension).
            if (r.idleTimeoutMs < r.timeoutMs) armTimeout(this.conn!.socket, r.idleTimeoutMs);
            owner.responded(this);
            continue;
          }
          case ParseEvent.Body: {
            const b = p.body;
            this.bytesOut += b.length;
            let ok: boolean;
            const ph = this.pendingHead;
            if (ph !== undefined) {
              this.pendingHead = undefined;
              // A small body read with its head leaves in one write (one syscall, no writev).
              if (!this.chunkOut && b.length <= COALESCE_MAX) {
                if (!c.write(Buffer.concat([ph, b], ph.length + b.length))) this.clientFull = true;
                continue;
              }
              c.write(ph);
            }
            if (this.chunkOut) {
              c.write(`${b.length.toString(16)}\r\n`, 'latin1');
              c.write(b);
              ok = c.write(CRLF);
            } else ok = c.write(b);
            if (!ok) this.clientFull = true;
            continue;
          }
          case ParseEvent.End:
            // The end of a 1xx, or of a 101's head: the tunnel starts at the Paused that follows.
            if (this.phase !== Phase.Responding || p.head!.framing === Framing.Tunnel) continue;
            this.flushHead(c);
            if (this.chunkOut) c.write(p.trailers && p.trailers.length > 0 ? trailerBlock(p.trailers) : LAST_CHUNK);
            this.phase = Phase.Done;
            owner.finished(this, !this.closeOut && this.requestDone && p.head!.keepAlive && p.buffered === 0);
            // Released to the pool (which reads an idle socket to see its FIN) or discarded:
            // never paused from here.
            return true;
          case ParseEvent.Paused:
            this.flushHead(c);
            this.phase = Phase.Done;
            owner.upgraded(this, p.takeRest());
            return true;
          default:
            return false;
        }
      }
    } finally {
      this.flushHead(c);
      c.uncork();
    }
  }

  private flushHead(c: net.Socket): void {
    const ph = this.pendingHead;
    if (ph === undefined) return;
    this.pendingHead = undefined;
    if (!c.write(ph)) this.clientFull = true;
  }

  /**
   * The upstream socket's timer fired while the response streams: true when it ran at the
   * route's `timeout` and the longer `idleTimeout` is not used up yet (it is re-armed for the
   * rest), false when the silence is over `idleTimeout`.
   */
  idleExtension(): boolean {
    const r = this.route!;
    if (this.idleExtended || r.idleTimeoutMs <= r.timeoutMs) return false;
    this.idleExtended = true;
    armTimeout(this.conn!.socket, r.idleTimeoutMs - r.timeoutMs);
    return true;
  }

  /** Whether a `retryOn` status of the upstream makes this request go to another backend. */
  private retryableStatus(status: number): boolean {
    const bits = this.route!.retryOn;
    const bit = status === 502 ? 4 : status === 503 ? 8 : 16;
    return (bits & bit) !== 0 && this.attempts < this.route!.retries && this.replay !== undefined && this.requestDone && idempotentMethod(this.head.method);
  }

  /** A 1xx other than 101: passed on to an HTTP/1.1 client (a 100 only if the gateway did not send its own). */
  private informational(c: net.Socket, h: ResponseHead, mw: Exchange, out: string[]): void {
    if (this.head.versionMinor === 0 || (h.status === 100 && this.sentContinue)) return;
    prepareResponse(h.headers, h.status, mw, this.route!.mw.rules, undefined, out);
    c.write(serializeResponseHead(h.status, h.reason, out, NO_BODY));
  }

  /** Makes the final response head (held in `pendingHead`), choosing the client-side framing. */
  private respond(h: ResponseHead, mw: Exchange, out: string[], closeAfter: boolean): void {
    this.phase = Phase.Responding;
    this.status = h.status;
    const r = this.route!;
    prepareResponse(h.headers, h.status, mw, r.mw.rules, r.mw.cors, out);
    let framing: number;
    const http10 = this.head.versionMinor === 0;
    if (h.status === 101) framing = NO_BODY;
    else if (h.framing === Framing.Chunked || h.framing === Framing.Close) {
      // A body of unknown length: chunked to an HTTP/1.1 client, close-delimited to a 1.0 one.
      if (http10) {
        framing = NO_BODY;
        this.closeOut = true;
      } else {
        framing = CHUNKED;
        this.chunkOut = true;
      }
    } else if (h.status === 204 || h.status < 200) framing = NO_BODY;
    else framing = h.contentLength >= 0 ? h.contentLength : h.framing === Framing.None && this.head.method !== 'HEAD' && h.status !== 304 ? 0 : NO_BODY;
    if (h.status !== 101) {
      if (closeAfter || this.closeOut) out.push('connection', 'close');
      else if (http10) out.push('connection', 'keep-alive');
    }
    this.pendingHead = serializeResponseHead(h.status, h.reason, out, framing);
  }
}

function idempotentMethod(m: string): boolean {
  return m === 'GET' || m === 'HEAD' || m === 'OPTIONS' || m === 'PUT' || m === 'DELETE' || m === 'TRACE';
}

/** `0\r\n`, the trailer fields, `\r\n`. */
function trailerBlock(trailers: readonly string[] | undefined): Buffer {
  if (trailers === undefined || trailers.length === 0) return LAST_CHUNK;
  let s = '0\r\n';
  for (let i = 0; i < trailers.length; i += 2) s += `${trailers[i]}: ${trailers[i + 1]}\r\n`;
  return Buffer.from(`${s}\r\n`, 'latin1');
}
