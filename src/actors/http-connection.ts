import { performance } from 'node:perf_hooks';
import type net from 'node:net';
import { setup } from 'xstate';
import { clientSubject, isTls, tlsInfo } from '../tls/listener-tls.ts';
import type { Logger } from 'pino';
import { Actor } from '../runtime/actor.ts';
import { compile, stepMachine } from '../runtime/compiled-machine.ts';
import { InjectedFaultError } from '../errors.ts';
import { L } from '../workers/state-table.ts';
import { HttpParseError } from '../http/codec/chars.ts';
import type { RequestHead } from '../http/codec/head.ts';
import { RequestParser } from '../http/codec/parser.ts';
import { ParseEvent } from '../http/codec/stream.ts';
import { ERROR_STATUS, Exchange, gatewayAnswer, requestIdOf, type AnswerOptions, type GatewayErrorCode } from '../http/middleware/index.ts';
import { HttpExchange, Phase, type ExchangeOwner } from '../http/exchange.ts';
import { headerValue, routeRequest, type CompiledRoute } from '../http/routes.ts';
import { hasDotSegment } from '../http/router.ts';
import type { PooledConnection } from '../http/pool.ts';
import type { HttpConnectionContext } from '../http/context.ts';
import { HttpTunnel } from '../http/tunnel.ts';
import { endRequestSpan } from '../telemetry/request-span.ts';
import { readsThroughOnread, readTlsThroughOnread, type ReadCallback } from '../net/adopt-socket.ts';

type Conn = PooledConnection<unknown>;

export type HttpConnectionState =
  | 'reading_head' | 'waiting_upstream' | 'streaming_request' | 'streaming_response'
  | 'keepalive_idle' | 'upgraded' | 'closing' | 'closed';
export type HttpConnectionEvent =
  | 'head' | 'body' | 'request.end' | 'response.head' | 'exchange.end' | 'read' | 'upgrade'
  | 'close' | 'sockets.closed' | 'kill' | 'crash';

/**
 * The life of one HTTP client connection. A request goes `head` (routed, sent upstream) →
 * `body` / `request.end` (its body streamed) → `response.head` → `exchange.end`, then the
 * connection idles kept alive until the next request's first byte (`read`). `upgrade` makes it a
 * byte tunnel after a 101; `close` is an orderly end (a `Connection: close`, a refused request,
 * a drain), `sockets.closed` both sockets gone, `kill` and `crash` an end from anywhere.
 */
export const httpConnectionMachine = setup({
  types: { events: {} as { type: HttpConnectionEvent } },
}).createMachine({
  id: 'http-connection',
  initial: 'reading_head',
  states: {
    reading_head: { on: { head: 'waiting_upstream', close: 'closing', 'sockets.closed': 'closed' } },
    waiting_upstream: {
      on: { body: 'streaming_request', 'response.head': 'streaming_response', 'exchange.end': 'keepalive_idle', upgrade: 'upgraded', close: 'closing', 'sockets.closed': 'closed' },
    },
    streaming_request: {
      on: { 'request.end': 'waiting_upstream', 'response.head': 'streaming_response', 'exchange.end': 'keepalive_idle', close: 'closing', 'sockets.closed': 'closed' },
    },
    streaming_response: { on: { 'exchange.end': 'keepalive_idle', upgrade: 'upgraded', close: 'closing', 'sockets.closed': 'closed' } },
    keepalive_idle: { on: { read: 'reading_head', head: 'waiting_upstream', close: 'closing', 'sockets.closed': 'closed' } },
    upgraded: { on: { close: 'closing', 'sockets.closed': 'closed' } },
    closing: { on: { 'sockets.closed': 'closed' } },
    closed: { type: 'final' },
  },
  on: { kill: '.closed', crash: '.closed' },
});

const table = compile<HttpConnectionState, HttpConnectionEvent>(httpConnectionMachine);

export type { HttpAccessEntry, HttpConnectionContext, HttpObservers } from '../http/context.ts';

let seq = 0;
const kConn = Symbol('gatehouse.httpConnection');
type OwnedSocket = net.Socket & { [kConn]: HttpConnectionActor };

/** Buffered bytes of pipelined requests past which the client socket is paused. */
const PIPELINE_BUFFER = 64 * 1024;

/**
 * One actor per HTTP client connection, in its listener's registry. It parses requests with the
 * strict codec, routes each one, runs the route's middleware, sends it on a pooled upstream
 * socket through an {@link HttpExchange} (a plain object per request) and streams the response
 * back, in order, one exchange at a time (pipelined requests wait, parsed, for their turn).
 * Stepped through the compiled {@link httpConnectionMachine}; every socket handler is guarded,
 * so a throw ends this connection alone (a request not yet answered gets a 500).
 */
export class HttpConnectionActor extends Actor implements ExchangeOwner {
  #state: HttpConnectionState = table.initial;
  readonly #ctx: HttpConnectionContext;
  readonly client: net.Socket;
  readonly #parser: RequestParser;
  /** The middleware's per-connection state (peer, trust, forwarded values). */
  readonly mw: Exchange;
  /** Reused header list (request, then response). */
  readonly out: string[] = [];
  #ex: HttpExchange | undefined;
  /** After a 101: the byte tunnel to the upstream socket that answered. */
  #tunnel: HttpTunnel | undefined;
  #requests = 0;
  /** Close once the current exchange ends (client asked, limit reached, refused body, drain). */
  #closeAfter = false;
  /** The close after the last answer must linger: a request body was left unread (#close). */
  #linger = false;
  #clientEnded = false;
  #clientClosed = false;
  #pumping = false;
  #keepAliveArmed = false;
  #headTimer: NodeJS.Timeout | undefined;
  #injected: unknown;
  #error: unknown;
  ipKey = 0;
  /** When it was accepted, for its age in `/actors`. */
  readonly #since = Date.now();

  constructor(ctx: HttpConnectionContext, client: net.Socket) {
    super(`http:${ctx.shard}:${++seq}`, 'http-connection');
    this.#ctx = ctx;
    this.client = client;
    const s = ctx.routes.settings;
    this.#parser = new RequestParser({ maxHeaderSize: s.maxHeaderSize, maxBodySize: s.maxBodySize });
    const tls = isTls(client);
    this.mw = new Exchange(client.remoteAddress ?? '', tls, (ctx.localPort ??= String(client.localPort ?? 0)), ctx.routes.listener.forwarded);
    if (tls) this.mw.clientCertSubject = clientSubject(client);
  }

  get state(): string {
    return this.#state;
  }

  override describe(): Record<string, unknown> {
    const ex = this.#ex;
    return {
      peer: `${this.client.remoteAddress}:${this.client.remotePort}`,
      requests: this.#requests,
      bytesIn: this.client.bytesRead,
      bytesOut: this.client.bytesWritten,
      ageMs: Date.now() - this.#since,
      ...(isTls(this.client) && { tls: tlsInfo(this.client) }),
      ...(ex && { request: { method: ex.head.method, path: ex.head.target.slice(0, 200), route: ex.route?.name ?? '', backend: ex.backend?.address } }),
    };
  }

  #log(): Logger {
    return this.#ctx.log.child({ actorId: this.id, actorType: this.type });
  }

  start(): this {
    const c = this.client as OwnedSocket;
    c[kConn] = this;
    const tlsReads = isTls(c);
    if (!tlsReads && !readsThroughOnread(c)) c.on('data', onClientData);
    c.on('end', onClientEnd);
    c.on('error', onClientError);
    c.on('close', onClientClose);
    c.on('timeout', onClientTimeout);
    c.on('drain', onClientDrain);
    c.setTimeout(this.#ctx.routes.settings.headersTimeoutMs);
    this.markRunning();
    // A TLS client's records are read into the thread's reused buffers too (what the handshake
    // already decrypted is handled first); where that cannot be done, through 'data'.
    if (tlsReads && !readTlsThroughOnread(c, onHttpClientRead as ReadCallback, (b) => this.guard(this.onData, b))) c.on('data', onClientData);
    c.resume();
    return this;
  }

  /** Fault injection (debug route): thrown from inside the next socket handler. */
  crash(err: unknown = new InjectedFaultError(this.id)): boolean {
    if (this.status === 'exited') return false;
    this.#injected = err;
    return true;
  }

  /**
   * Runs a handler of this connection (`fn` called on it with `arg`; no closure per event): a
   * throw ends this connection alone, with a 500 if a request waits for its answer.
   */
  guard<A>(fn: (this: HttpConnectionActor, arg: A) => void, arg: A): void {
    try {
      if (this.#injected !== undefined) {
        const err = this.#injected;
        this.#injected = undefined;
        throw err;
      }
      fn.call(this, arg);
    } catch (err) {
      this.#fail(err);
    }
  }

  #step(ev: HttpConnectionEvent): void {
    const next = stepMachine(table, this, this.#state, ev);
    if (next === undefined) return;
    this.#state = next;
    if (next === 'closed') this.#finish(ev === 'kill' ? 'killed' : ev === 'crash' ? 'error' : this.status === 'stopping' ? 'shutdown' : 'normal');
  }

  // ---- the client side ---------------------------------------------------------------------

  onData(chunk: Buffer): void {
    const t = this.#tunnel;
    if (t !== undefined) return t.fromClient(chunk);
    // After the close (a refused request, `Connection: close`, a limit): what the client still
    // sends is read and dropped, not parsed nor kept, until it closes or the timeout ends it.
    if (this.#state === 'closing' || this.#state === 'closed') return;
    if (this.#state === 'keepalive_idle') this.#step('read');
    this.#parser.feed(chunk);
    this.pump();
  }

  /**
   * Parses and handles what the client sent, as far as the current exchange lets it. Re-entrant
   * calls (an answer made while handling a head) return at once: the outer loop goes on.
   */
  pump(): void {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      this.#pumpLoop();
    } finally {
      this.#pumping = false;
    }
  }

  #pumpLoop(): void {
    const p = this.#parser;
    for (;;) {
      // Closed by what was just handled (a refused request, the last answer): nothing more is
      // parsed, or a pipelined request would be answered on a connection already ended.
      if (this.#state === 'closing' || this.#state === 'closed') return;
      const ex = this.#ex;
      if (ex !== undefined) {
        // One exchange at a time: a pipelined request waits, parsed, for the response before it.
        if (ex.requestDone || ex.phase === Phase.Dispatching || ex.upstreamFull) {
          // A body waits for its upstream socket (and one that cannot take more). A whole request
          // keeps its client read, up to PIPELINE_BUFFER pipelined bytes: a paused socket that
          // reads through `onread` does not read at all, so a client's reset would go unseen.
          if (p.buffered > PIPELINE_BUFFER || ex.upstreamFull || (ex.phase === Phase.Dispatching && !ex.requestDone)) this.client.pause();
          else this.client.resume();
          return;
        }
      }
      let ev: ParseEvent;
      try {
        ev = p.next();
      } catch (err) {
        this.#refused(err);
        return;
      }
      switch (ev) {
        case ParseEvent.NeedMore:
          if (this.#ex === undefined && p.buffered > 0 && this.#headTimer === undefined) this.#armHeadTimer();
          this.client.resume();
          return;
        case ParseEvent.Head:
          this.#onHead(p.head!);
          continue;
        case ParseEvent.Body: {
          // No exchange: the gateway answered this request already (and ended its exchange).
          const ex2 = this.#ex;
          if (ex2 === undefined || ex2.phase === Phase.Answered) continue; // dropped
          if (this.#state === 'waiting_upstream') this.#step('body');
          ex2.body(p.body);
          continue;
        }
        case ParseEvent.End: {
          const ex2 = this.#ex;
          // The end of a request the gateway answered at its head (a 404, a 503 while
          // dispatching): its exchange ended with the answer.
          if (ex2 === undefined) continue;
          if (ex2.phase === Phase.Answered) {
            ex2.requestDone = true;
            this.#exchangeEnd(ex2);
            continue;
          }
          ex2.end(p.trailers);
          this.#step('request.end');
          continue;
        }
        default:
          // Paused (an upgrade waits for its 101) or Closed (nothing after a closing request).
          return;
      }
    }
  }

  #armHeadTimer(): void {
    this.#headTimer = setTimeout(onHeadTimeout, this.#ctx.routes.settings.headersTimeoutMs, this).unref();
  }

  #clearHeadTimer(): void {
    if (this.#headTimer !== undefined) clearTimeout(this.#headTimer);
    this.#headTimer = undefined;
  }

  headTimedOut(): void {
    this.#headTimer = undefined;
    if (this.#ex !== undefined || this.#state === 'closed') return;
    this.#log().debug({ remoteAddress: this.client.remoteAddress }, 'request head not complete within headersTimeout: connection closed');
    this.#close(true);
  }

  #onHead(head: RequestHead): void {
    this.#clearHeadTimer();
    const ctx = this.#ctx;
    const routes = ctx.routes;
    this.#requests++;
    const max = routes.settings.maxRequestsPerConnection;
    // An upgrade leaves the codec paused: if it is refused (a gateway answer or a backend's non-101),
    // the bytes after it may be the new protocol's, so the connection ends with that answer.
    if (head.upgrade || !head.keepAlive || ctx.draining || (max > 0 && this.#requests >= max)) this.#closeAfter = true;
    const requestId = requestIdOf(head.headers, routes.listener.ids);
    this.mw.clientAddress = '';
    const { match: m, preflight } = routeRequest(routes, head);
    const route = m.ok ? routes.byIndex[m.index] : undefined;
    const ex = new HttpExchange(head, route, requestId, performance.now());
    // Tracing off: this check is all it costs a request.
    const tracer = ctx.tracing.tracer;
    if (tracer !== undefined) ex.span = tracer.start(head);
    this.#ex = ex;
    this.mw.requestId = requestId;
    this.#step('head');
    // A dot-segment would let a backend that resolves it serve a path no route checked.
    if (hasDotSegment(head.target)) return this.answer(ex, 'bad_request');
    if (!m.ok) return this.answer(ex, m.code, m.allow === undefined ? undefined : { allow: m.allow });
    const r = route!;
    if (preflight && r.mw.cors) {
      const origin = headerValue(head.headers, 'origin')!;
      return this.#sendAnswer(ex, r.mw.cors.allows(origin) ? 204 : 403, r.mw.cors.preflight(origin, headerValue(head.headers, 'access-control-request-headers'), requestId, this.#closeAfter || !this.#bodyDone(head)));
    }
    if (head.upgrade && !r.config.websocket) return this.answer(ex, 'upgrade_not_allowed');
    if (head.chunked && !this.#readAhead(ex)) return;
    ctx.dispatcher.begin(this, ex, r);
  }

  /**
   * Parses the chunked body bytes that came with the head before the head goes upstream (a
   * warm pool sends it at once), so that a framing error or a body over `maxBodySize` in them
   * is answered (400, 413) and not one byte of the request reaches a backend. The slices wait
   * on the exchange and follow the head upstream ({@link HttpExchange.send}). False: refused.
   */
  #readAhead(ex: HttpExchange): boolean {
    const p = this.#parser;
    for (;;) {
      let ev: ParseEvent;
      try {
        ev = p.next();
      } catch (err) {
        this.#refused(err);
        return false;
      }
      if (ev === ParseEvent.Body) ex.body(p.body);
      else {
        if (ev === ParseEvent.End) ex.end(p.trailers);
        return true;
      }
    }
  }

  /** The request has no body left to read (none, or all of it parsed). */
  #bodyDone(head: RequestHead): boolean {
    return !head.chunked && head.contentLength <= 0;
  }

  /** A request the codec refused: answered with its status and closed, or reset mid-body. */
  #refused(err: unknown): void {
    const ex = this.#ex;
    if (!(err instanceof HttpParseError)) throw err;
    this.#log().debug({ err, remoteAddress: this.client.remoteAddress }, 'request refused by the codec');
    if (ex !== undefined && ex.phase !== Phase.Dispatching && ex.phase !== Phase.Answered) {
      // A framing error inside a body already streaming upstream: both sides are reset.
      this.#dropUpstream(ex, err);
      // Ended through the dispatcher too: the backend's active count and the request in flight go back.
      ex.status = err.status;
      this.#recordEnd(ex);
      this.#ex = undefined;
      this.client.resetAndDestroy();
      return;
    }
    if (ex !== undefined) this.#dropUpstream(ex);
    this.#closeAfter = true;
    const id = ex?.requestId ?? this.#ctx.routes.listener.ids.next();
    const status = err.status;
    this.client.write(gatewayAnswer(err.code as GatewayErrorCode, id, { close: true }, status));
    if (ex !== undefined) {
      // Refused while read ahead (`#readAhead`), maybe dispatched already: its counts go back.
      ex.status = status;
      this.#recordEnd(ex);
    } else this.#ctx.stats.request(this.#ctx.listener.name, '', status, 0);
    this.#ex = undefined;
    this.#close(false);
  }

  /** Answers the current request with a gateway error (JSON body) and ends the exchange. */
  answer(ex: HttpExchange, code: GatewayErrorCode, opts?: AnswerOptions): void {
    const close = this.#closeAfter || !(ex.requestDone || this.#bodyDone(ex.head));
    // An HTTP/1.0 client keeps the connection only when the answer says keep-alive.
    const extra = !close && ex.head.versionMinor === 0 ? `${opts?.extra ?? ''}connection: keep-alive\r\n` : opts?.extra;
    const o: AnswerOptions = { ...opts, head: ex.head.method === 'HEAD', close, extra };
    this.#sendAnswer(ex, ERROR_STATUS[code], gatewayAnswer(code, ex.requestId, o));
  }

  #sendAnswer(ex: HttpExchange, status: number, buf: Buffer): void {
    if (ex !== this.#ex || this.#clientClosed) return;
    ex.status = status;
    ex.phase = Phase.Answered;
    if (!this.#bodyDone(ex.head) && !ex.requestDone) {
      // Answered before its body was read: the rest of the body may still be on its way.
      this.#closeAfter = true;
      this.#linger = true;
    }
    this.client.write(buf);
    if (this.#closeAfter || this.#bodyDone(ex.head) || ex.requestDone) {
      ex.requestDone = true;
      this.#exchangeEnd(ex);
    }
    if (this.#state !== 'closing' && this.#state !== 'closed') this.pump();
  }

  // ---- the exchange's reports (ExchangeOwner) ----------------------------------------------

  responded(ex: HttpExchange): void {
    if (ex !== this.#ex) return;
    this.#ctx.dispatcher.responded(ex);
    this.#step('response.head');
  }

  finished(ex: HttpExchange, reusable: boolean): void {
    const conn = ex.conn!;
    ex.conn = undefined;
    if (reusable) ex.pool!.release(conn);
    else ex.pool!.discard(conn);
    if (ex.closeOut) this.#closeAfter = true;
    this.#exchangeEnd(ex);
    if (this.#state !== 'closing' && this.#state !== 'closed') this.pump();
  }

  failed(ex: HttpExchange, why: 'reset' | 'timeout' | 'invalid' | 'status', err?: Error): void {
    if (ex !== this.#ex) return;
    this.#ctx.dispatcher.upstreamFailed(this, ex, why, err);
  }

  mayRetry(ex: HttpExchange): boolean {
    return this.#ctx.dispatcher.budget(ex);
  }

  broken(ex: HttpExchange, err?: Error): void {
    if (ex !== this.#ex) return;
    this.#debug({ err, backend: ex.backend?.address }, 'upstream failed mid-response: client connection reset');
    this.#dropUpstream(ex, err);
    this.#recordEnd(ex);
    this.#ex = undefined;
    this.client.resetAndDestroy();
  }

  upgraded(ex: HttpExchange, rest: Buffer): void {
    const conn = ex.conn!;
    ex.conn = undefined;
    this.#ctx.dispatcher.responded(ex);
    this.#recordEnd(ex);
    this.#ex = undefined;
    this.#step('upgrade');
    this.#tunnel = new HttpTunnel(this.client, conn, ex.pool!, rest, this.#parser.takeRest(), this.#ctx.listener.idleTimeoutMs);
  }

  // ---- upstream socket events (through the pool's handlers) ---------------------------------

  /** Response (or tunnel) bytes; false pauses the upstream socket until the client drains. */
  upstreamRead(conn: Conn, chunk: Buffer): boolean {
    try {
      if (this.#injected !== undefined) {
        const err = this.#injected;
        this.#injected = undefined;
        throw err;
      }
      const t = this.#tunnel;
      if (t !== undefined) return t.fromUpstream(conn, chunk);
      const ex = this.#ex;
      if (ex === undefined || ex.conn !== conn) return false;
      return ex.read(this, chunk, this.mw, this.out, this.#closeAfter);
    } catch (err) {
      this.#fail(err);
      // Not false: #fail destroyed the socket if it was still this connection's, and a throw
      // after `finished` gave it back to the pool (while handling the next pipelined request)
      // would leave an idle pooled socket paused: the next request on it would hang.
      return true;
    }
  }

  /** The upstream socket closed while this connection owned it (a FIN ends a close-delimited body). */
  upstreamClosed(e: { conn: Conn; err: Error | undefined }): void {
    const t = this.#tunnel;
    if (t !== undefined) {
      if (t.conn !== e.conn) return;
      this.#tunnel = undefined;
      if (e.err) this.client.destroy();
      else this.#close(false);
      return;
    }
    const ex = this.#ex;
    if (ex === undefined || ex.conn !== e.conn) return;
    if (e.err === undefined && ex.phase === Phase.Responding) ex.eof(this, this.mw, this.out, this.#closeAfter);
    if (this.#ex !== ex || ex.conn !== e.conn) return;
    if (ex.phase === Phase.Responding) this.broken(ex, e.err);
    else this.failed(ex, 'reset', e.err);
  }

  /** No byte from the upstream for the route's `timeout` (before the head) or `idleTimeout`. */
  upstreamTimedOut(conn: Conn): void {
    const ex = this.#ex;
    if (ex === undefined || ex.conn !== conn) return;
    if (ex.phase !== Phase.Responding) this.failed(ex, 'timeout');
    else if (!ex.idleExtension()) this.broken(ex, new Error('upstream idle timeout'));
  }

  // ---- ending exchanges and the connection -------------------------------------------------

  /** A response was sent in full (or a gateway answer): counted, logged, next request. */
  #exchangeEnd(ex: HttpExchange): void {
    this.#recordEnd(ex);
    this.#ex = undefined;
    this.#step('exchange.end');
    if (this.#closeAfter || this.#clientEnded) {
      // The request was read whole and nothing follows it: closed once the FIN is out, without
      // waiting for the client's (as HAProxy and nginx do). Else the close lingers (#close).
      this.#close(false, this.#linger || !ex.requestDone || this.#parser.buffered !== 0);
      return;
    }
    if (!this.#keepAliveArmed) {
      // From the first answer on, the client's inactivity timer runs at keepAliveTimeout (set
      // once, not per request): between requests it closes an idle connection, and while an
      // exchange runs a firing is ignored (the route's timeouts govern it).
      this.#keepAliveArmed = true;
      this.client.setTimeout(this.#ctx.routes.settings.keepAliveTimeoutMs);
    }
    if (this.#parser.buffered !== 0) this.#step('read');
    this.client.resume();
  }

  #recordEnd(ex: HttpExchange): void {
    const ctx = this.#ctx;
    ctx.dispatcher.end(ex);
    const ms = performance.now() - ex.startedAt;
    ctx.stats.request(ctx.listener.name, ex.route?.name ?? '', ex.status, ms / 1000);
    ctx.accessLog?.record({
      listener: ctx.listener.name, route: ex.route?.name ?? '', method: ex.head.method, path: ex.head.target, status: ex.status,
      durationMs: ms, upstream: ex.upstream?.config.name, backend: ex.backend?.address, requestId: ex.requestId,
      bytesIn: ex.bytesIn, bytesOut: ex.bytesOut, remoteAddress: this.mw.clientAddress || this.mw.peer, traceId: ex.span?.spanContext().traceId,
    });
    const span = ex.span;
    if (span !== undefined) {
      ex.span = undefined;
      endRequestSpan(span, ex, { listener: ctx.listener.name, client: this.mw.clientAddress || this.mw.peer });
    }
  }

  /** Destroys the exchange's upstream socket (not reusable: its request or response is cut). */
  #dropUpstream(ex: HttpExchange, err?: Error): void {
    const conn = ex.conn;
    ex.conn = undefined;
    if (conn) ex.pool!.discard(conn, err);
    ex.phase = Phase.Done;
  }

  #debug(obj: Record<string, unknown>, msg: string): void {
    if (this.#ctx.log.isLevelEnabled('debug')) this.#log().debug(obj, msg);
  }

  /**
   * Ends the client connection: at once (`now`) or after the pending writes (FIN). A lingering
   * close (`linger`) then reads and drops what the client still sends until its FIN: closing
   * with unread bytes would send a reset, which can destroy the answer before the client reads
   * it (a refused upload, pipelined requests after the last one served). Without `linger`, the
   * socket closes as soon as its FIN is out. Either way the timeout below bounds the wait.
   */
  #close(now: boolean, linger = true): void {
    if (this.#state === 'closed') return;
    this.#clearHeadTimer();
    if (this.#state !== 'closing') this.#step('close');
    if (now) return void this.client.destroy();
    // Ended already (the client's FIN after our last answer): a second end() would only build
    // an ERR_STREAM_ALREADY_FINISHED, a stack trace per connection. The socket destroys itself
    // once both sides are done.
    if (this.client.writableEnded) return;
    if (linger) {
      // A client paused for backpressure (an upload cut short by a 502) must be read again, or
      // its FIN never arrives and the socket waits out the timeout below.
      this.client.resume();
      this.client.end();
    } else {
      this.client.destroySoon();
      // Closed at once (nothing was queued): no timer to arm.
      if (this.client.destroyed) return;
    }
    this.client.setTimeout(this.#ctx.routes.settings.keepAliveTimeoutMs || 5_000);
  }

  onEnd(): void {
    this.#clientEnded = true;
    if (this.#tunnel !== undefined) return this.#tunnel.clientEnded();
    const ex = this.#ex;
    if (ex === undefined) return this.#close(false);
    // A FIN in the middle of a request body: the request can never complete.
    if (!ex.requestDone && ex.phase !== Phase.Answered) {
      this.#dropUpstream(ex);
      this.#recordEnd(ex);
      this.#ex = undefined;
      this.#close(true);
    }
  }

  onTimeout(): void {
    // Idle between requests (keepAliveTimeout), before the first head (headersTimeout), or a
    // closing connection whose peer does not read: it ends now. During an exchange the client
    // may well be silent (a slow upstream): the next byte either way re-arms the timer.
    if (this.#ex !== undefined && this.#state !== 'closing') return;
    this.#close(true);
  }

  onClose(): void {
    this.#clientClosed = true;
    this.#clearHeadTimer();
    const ex = this.#ex;
    if (ex !== undefined) {
      this.#dropUpstream(ex);
      if (ex.status === 0) ex.status = 499;
      this.#recordEnd(ex);
      this.#ex = undefined;
    }
    this.#endTunnel();
    this.#step('sockets.closed');
  }

  onDrain(): void {
    if (this.#tunnel !== undefined) return this.#tunnel.clientDrained();
    const ex = this.#ex;
    if (ex !== undefined && ex.clientFull) {
      ex.clientFull = false;
      ex.conn?.socket.resume();
    }
  }

  /** The upstream socket drained: the client's body (or tunnel bytes) may flow again. */
  upstreamDrained(ex: HttpExchange | undefined): void {
    if (this.#tunnel !== undefined) return this.#tunnel.upstreamDrained();
    if (ex === undefined) return;
    if (ex !== this.#ex || !ex.upstreamFull) return;
    ex.upstreamFull = false;
    this.pump();
  }

  /** The listener drains: an idle connection closes now, a busy one after its exchange. */
  drainNow(): void {
    this.#closeAfter = true;
    if (this.#ex === undefined && this.#tunnel === undefined && this.#parser.buffered === 0) this.#close(false);
  }

  #fail(err: unknown): void {
    if (this.status === 'exited') return;
    this.#error = err;
    this.#log().error({ err, remoteAddress: this.client.remoteAddress, state: this.#state }, 'http connection handler failed: connection closed');
    const ex = this.#ex;
    if (ex !== undefined) {
      this.#dropUpstream(ex);
      if (ex.phase !== Phase.Responding && !this.#clientClosed && !this.client.destroyed) {
        this.client.end(gatewayAnswer('internal_error', ex.requestId, { close: true }));
        ex.status = 500;
      }
      this.#recordEnd(ex);
      this.#ex = undefined;
    }
    this.#endTunnel();
    if (this.#state === 'closed') {
      this.exit('error', err);
      return;
    }
    this.client.destroySoon();
    this.#step('crash');
  }

  #endTunnel(): void {
    const t = this.#tunnel;
    if (t === undefined) return;
    this.#tunnel = undefined;
    t.discard();
  }

  #finish(reason: 'normal' | 'shutdown' | 'killed' | 'error'): void {
    const ctx = this.#ctx;
    const c = this.client;
    this.#clearHeadTimer();
    ctx.table.bytesAdd(ctx.shard, ctx.listener.slot, c.bytesRead, c.bytesWritten);
    ctx.table.listenerAdd(ctx.shard, ctx.listener.slot, L.ACTIVE, -1);
    ctx.table.listenerRelease(ctx.listener.slot);
    if (this.ipKey !== 0) ctx.table.ipRelease(ctx.listener.slot, ctx.shard, this.ipKey);
    ctx.table.listenerAdd(ctx.shard, ctx.listener.slot, reason === 'error' ? L.ERROR : L.OK, 1);
    this.exit(reason, reason === 'error' ? this.#error : undefined);
  }

  protected requestStop(): boolean {
    this.drainNow();
    return true;
  }

  protected forceStop(): void {
    const ex = this.#ex;
    if (ex !== undefined) {
      this.#dropUpstream(ex);
      this.#recordEnd(ex);
      this.#ex = undefined;
    }
    this.#endTunnel();
    this.client.destroy();
    this.#step('kill');
  }

  /** The exchange in progress (the dispatcher's view). */
  get exchange(): HttpExchange | undefined {
    return this.#ex;
  }

  get route(): CompiledRoute | undefined {
    return this.#ex?.route;
  }

  /** Whether the answer to the current request closes the connection. */
  get closeAfter(): boolean {
    return this.#closeAfter;
  }

  get context(): HttpConnectionContext {
    return this.#ctx;
  }
}


// Socket handlers shared by every connection (`this` is the socket): no closure per connection.
function onClientData(this: OwnedSocket, chunk: Buffer): void {
  const a = this[kConn];
  a.guard(a.onData, chunk);
}
/**
 * The `onread` callback of an adopted client socket (see {@link adoptSocket}): the bytes are
 * copied out of the thread's shared read buffer (the parser keeps pipelined bytes and body
 * slices), then handled as a 'data' chunk. Flow control is the actor's own pause()/resume().
 */
export function onHttpClientRead(this: OwnedSocket, n: number, buf: Buffer): boolean {
  const a = this[kConn];
  a.guard(a.onData, Buffer.from(buf.subarray(0, n)));
  return true;
}
function onClientEnd(this: OwnedSocket): void {
  const a = this[kConn];
  a.guard(a.onEnd, undefined);
}
function onClientError(this: OwnedSocket): void {
  // 'close' follows with hadError; the exchange is dropped there.
}
function onClientClose(this: OwnedSocket): void {
  const a = this[kConn];
  a.guard(a.onClose, undefined);
}
function onClientTimeout(this: OwnedSocket): void {
  const a = this[kConn];
  a.guard(a.onTimeout, undefined);
}
function onClientDrain(this: OwnedSocket): void {
  const a = this[kConn];
  a.guard(a.onDrain, undefined);
}
function onHeadTimeout(a: HttpConnectionActor): void {
  a.guard(a.headTimedOut, undefined);
}
