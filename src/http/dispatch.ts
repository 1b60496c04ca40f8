/**
 * From a routed request to an upstream socket, and what to do when the upstream fails: the
 * route's JWT auth and rate limit, the upstream (split, sticky) and backend (balancer) choice,
 * the pooled socket, and the retries with their budget. One per listener per shard; the pool
 * handlers at the bottom route each upstream socket event to its exchange.
 */
import type { Logger } from 'pino';
import type { HttpConnectionActor } from '../actors/http-connection.ts';
import { TokenError, bearerToken } from '../auth/jwt.ts';
import { bearerChallenge, forwardClaimsInto } from '../auth/http.ts';
import type { StateTable } from '../workers/state-table.ts';
import { HttpExchange, Phase, REPLAY_MAX } from './exchange.ts';
import { AUTHENTICATED, PASS_UPGRADE, prepareUpstream, upstreamTarget } from './middleware/headers.ts';
import { CHUNKED, NO_BODY, serializeRequestHead } from './middleware/serialize.ts';
import { PoolError, canRetryOnFresh, type PoolHandlers, type PooledConnection } from './pool.ts';
import { LimitKey, RetryOn, headerValue, idempotent, upstreamFor, type CompiledRoute } from './routes.ts';
import { injectTraceContext } from '../telemetry/request-span.ts';
import { routeRateAdmit } from '../cluster/ratelimit-shard.ts';

const CONTINUE = Buffer.from('HTTP/1.1 100 Continue\r\n\r\n', 'latin1');

/** Envoy's retry budget: retries in flight at most this share of the requests in flight... */
export const RETRY_BUDGET = 0.2;
/** ...but always at least this many, so a quiet listener can still retry. */
export const MIN_RETRY_CONCURRENCY = 3;

type Conn = PooledConnection<unknown>;

/** What the dispatcher reports besides the connection's own counters. */
export interface DispatchObservers {
  retry(upstream: string): void;
  rateLimited(listener: string, route: string): void;
}

/**
 * Sends each routed request of one listener on this shard.
 *
 * @example
 * const d = new Dispatcher(table, shard, listener.slot, listener.name, observers, log);
 * d.begin(conn, ex, route); // called by the connection at each routed head
 */
export class Dispatcher {
  /** Exchanges dispatched and not ended, and how many of them are retrying now (the budget). */
  active = 0;
  retrying = 0;
  readonly #table: StateTable;
  readonly #shard: number;
  #slot: number;
  #name: string;
  readonly #obs: DispatchObservers;
  readonly #log: Logger;

  constructor(table: StateTable, shard: number, slot: number, name: string, obs: DispatchObservers, log: Logger) {
    this.#table = table;
    this.#shard = shard;
    this.#slot = slot;
    this.#name = name;
    this.#obs = obs;
    this.#log = log;
  }

  /** Starts a routed request: forwarded headers, auth, rate limit, then an upstream socket. */
  begin(conn: HttpConnectionActor, ex: HttpExchange, route: CompiledRoute): void {
    this.active++;
    ex.dispatched = true;
    const head = ex.head;
    const flags = (head.upgrade ? PASS_UPGRADE : 0) | (route.verifier ? AUTHENTICATED : 0);
    prepareUpstream(head.headers, head.host, conn.mw, route.mw.rules, flags, conn.out);
    // The backend's request is a child of the gateway's span (tracing on).
    if (ex.span !== undefined) injectTraceContext(ex.span, conn.out);
    if (route.verifier === undefined) return this.#limit(conn, ex, route, undefined, false);
    const token = bearerToken(headerValue(head.headers, 'authorization'), undefined) ?? '';
    route.verifier.verify(token).then(
      (v) => {
        if (conn.exchange !== ex) return;
        conn.guard(() => this.#limit(conn, ex, route, v.claims, true), undefined);
      },
      (err: unknown) => {
        if (conn.exchange !== ex) return;
        const reason = err instanceof TokenError ? err.reason : 'malformed';
        conn.guard(() => conn.answer(ex, 'unauthorized', { wwwAuthenticate: bearerChallenge(reason) }), undefined);
      },
    );
  }

  #limit(conn: HttpConnectionActor, ex: HttpExchange, route: CompiledRoute, claims: Record<string, unknown> | undefined, async: boolean): void {
    const fc = route.config.auth?.jwt.forwardClaims;
    if (fc !== undefined && claims !== undefined) forwardClaimsInto(fc, claims, conn.out);
    const limit = route.limit;
    if (limit !== undefined) {
      let key: string;
      if (limit.kind === LimitKey.Ip) key = conn.mw.clientAddress;
      else if (limit.kind === LimitKey.Header) key = headerValue(ex.head.headers, limit.name) ?? '';
      else key = claimKey(claims?.[limit.name]);
      // Local, or from the key's lease of the bucket the cluster shares (cluster mode, Redis up).
      const waitMs = routeRateAdmit(this.#table, this.#slot, this.#name, route.index, route.name, key, limit);
      if (waitMs > 0) {
        this.#obs.rateLimited(this.#name, route.name);
        conn.answer(ex, 'rate_limited', { retryAfter: Math.ceil(waitMs / 1000) });
        if (async) conn.pump();
        return;
      }
    }
    if (ex.head.expectContinue) dropField(conn.out, 'expect');
    this.#pick(conn, ex, route, async, false);
  }

  /**
   * Picks the backend (another one on a retry) and gets a socket toward it. `retry`: a route
   * retry, counted in `gatehouse_upstream_retries_total` once a backend to send it to is found.
   */
  #pick(conn: HttpConnectionActor, ex: HttpExchange, route: CompiledRoute, async: boolean, fresh: boolean, retry = false): void {
    if (ex.upstream === undefined) {
      const name = upstreamFor(route, ex.head.headers);
      ex.upstream = name === undefined ? undefined : conn.context.upstreams.get(name);
      if (ex.upstream === undefined) return this.#answer(conn, ex, 'unavailable', async);
    }
    const up = ex.upstream;
    const b = fresh ? ex.backend : up.balancer.pick(ex.tried);
    // No backend left for a retry: the answer tells the last failure (a backend's 503 stays a 503).
    if (b === undefined) return this.#answer(conn, ex, ex.tried ? failureCode(ex.status) : 'unavailable', async);
    if (retry) this.#obs.retry(up.config.name);
    ex.backend = b;
    if (!fresh) ex.trial = up.balancer.trial;
    this.#table.backendActiveAdd(this.#shard, b.slot, 1);
    ex.counted = true;
    const pool = up.pool(b);
    ex.pool = pool;
    // A body too large to keep for a resend could not be sent again if a reused socket met the
    // keep-alive race (a 502 for a 70 KB POST): such a request takes a fresh connection, which
    // the race cannot hit. `conn.out` holds the request's upstream fields until it is sent.
    const isFresh = fresh || (ex.attempts === 0 && ex.head.contentLength > 0 && !fitsReplay(ex, conn.out));
    const c = isFresh ? undefined : pool.tryAcquire(conn);
    if (c !== undefined) return this.#send(conn, ex, c as Conn, async);
    pool.acquire(conn, isFresh).then(
      (got) => {
        if (conn.exchange !== ex || ex.phase !== Phase.Dispatching) return pool.release(got);
        conn.guard(() => this.#send(conn, ex, got as Conn, true), undefined);
      },
      (err: unknown) => {
        if (conn.exchange !== ex || ex.phase !== Phase.Dispatching) return;
        conn.guard(() => this.#acquireFailed(conn, ex, route, err), undefined);
      },
    );
  }

  #send(conn: HttpConnectionActor, ex: HttpExchange, c: Conn, async: boolean): void {
    const head = ex.head;
    if (ex.replay !== undefined && ex.replay.length === 0) {
      const out = conn.out;
      // An HTTP/1.0 request without Host goes upstream as HTTP/1.1, which needs one.
      if (head.host === undefined) out.push('host', ex.backend!.address);
      const framing = head.upgrade ? NO_BODY : head.chunked ? CHUNKED : head.contentLength > 0 ? head.contentLength : NO_BODY;
      const buf = serializeRequestHead(head.method, upstreamTarget(head.target, ex.route!.mw.strip), out, framing);
      // Kept whole, whatever its size (not through `keep`): a head over REPLAY_MAX, which a
      // maxHeaderSize above 64 KiB lets in, was dropped there and left nothing to send (a 500).
      // The body is then kept while head and body stay within the limit.
      ex.replay.push(buf);
      ex.replayBytes += buf.length;
    }
    ex.send(c, conn.context.routes.settings.maxHeaderSize);
    if (head.expectContinue && !ex.sentContinue && !ex.requestDone) {
      ex.sentContinue = true;
      conn.client.write(CONTINUE);
    }
    if (async) conn.pump();
  }

  #acquireFailed(conn: HttpConnectionActor, ex: HttpExchange, route: CompiledRoute, err: unknown): void {
    this.#uncount(ex);
    ex.status = 0; // no response: not the status of an earlier try
    const code = err instanceof PoolError ? err.code : 'connect_failed';
    const up = ex.upstream!;
    const b = ex.backend!;
    if (code === 'pool_exhausted') return this.#answer(conn, ex, 'unavailable', true);
    if (code === 'pool_closed' && ex.attempts < 8) {
      // A reload closed this backend's pool between the pick and the acquire: pick again (a
      // trial permit taken with this pick goes back first: the next pick overwrites `trial`).
      if (ex.trial) up.balancer.abandoned(b, true);
      ex.trial = false;
      ex.attempts++;
      ex.upstream = undefined; // the reloaded upstream is looked up again, not the closed one
      return this.#pick(conn, ex, route, true, false);
    }
    up.balancer.failed(b, ex.trial);
    ex.trial = false;
    this.#log.debug({ err, backend: b.address, requestId: ex.requestId }, 'upstream connect failed');
    const maxConnect = Math.max(route.retries, up.config.connectRetries);
    if ((route.retryOn & RetryOn.ConnectFailure) !== 0 && ex.attempts < maxConnect && this.budget(ex)) {
      this.#retry(conn, ex, route, b);
      return;
    }
    this.#answer(conn, ex, 'bad_gateway', true);
  }

  /**
   * The upstream failed before any response byte reached the client. A reset on a reused socket
   * that had not answered is the keep-alive race: sent again on a fresh socket, any method. Else
   * a retry on another backend when the route allows it, or a 502 / 504.
   */
  upstreamFailed(conn: HttpConnectionActor, ex: HttpExchange, why: 'reset' | 'timeout' | 'invalid' | 'status', err?: Error): void {
    const c = ex.conn!;
    ex.conn = undefined;
    ex.pool!.discard(c, err);
    this.#uncount(ex);
    ex.phase = Phase.Dispatching;
    const route = ex.route!;
    const up = ex.upstream!;
    const b = ex.backend!;
    // `status`: the exchange set the backend's status (502-504); any other failure had no response.
    if (why !== 'status') ex.status = 0;
    if (why === 'reset' && canRetryOnFresh(c) && ex.replay !== undefined && !ex.freshRetry) {
      ex.freshRetry = true;
      return this.#pick(conn, ex, route, true, true);
    }
    if (why === 'status') {
      // The backend answered (a `retryOn` status): for its breaker, a success, and the outcome of
      // a half-open trial, which the retry's pick would otherwise overwrite and lose (the breaker
      // then stayed half-open, its permit taken, until the trial timed out).
      this.responded(ex);
    } else {
      up.balancer.failed(b, ex.trial);
      ex.trial = false;
    }
    this.#log.debug({ err, why, backend: b.address, requestId: ex.requestId }, 'upstream request failed');
    const retryable =
      why === 'status' ||
      (why === 'reset' && (route.retryOn & RetryOn.Reset) !== 0 && idempotent(ex.head.method) && ex.requestDone && ex.attempts < route.retries);
    if (retryable && ex.replay !== undefined && this.budget(ex)) return this.#retry(conn, ex, route, b);
    this.#answer(conn, ex, why === 'timeout' ? 'timeout' : failureCode(ex.status), true);
  }

  #retry(conn: HttpConnectionActor, ex: HttpExchange, route: CompiledRoute, failed: NonNullable<HttpExchange['backend']>): void {
    ex.attempts++;
    (ex.tried ??= []).push(failed);
    this.#pick(conn, ex, route, true, false, true);
  }

  /** Whether one more retry fits the budget; the exchange then counts as retrying until it ends. */
  budget(ex: HttpExchange): boolean {
    if (ex.inBudget) return true;
    // Rounded down, as Envoy does: with 26 requests in flight, 5 may retry (a 6th would be 23%).
    if (this.retrying >= Math.max(MIN_RETRY_CONCURRENCY, Math.floor(this.active * RETRY_BUDGET))) return false;
    ex.inBudget = true;
    this.retrying++;
    return true;
  }

  #answer(conn: HttpConnectionActor, ex: HttpExchange, code: 'unavailable' | 'bad_gateway' | 'timeout', async: boolean): void {
    conn.answer(ex, code);
    if (async) conn.pump();
  }

  /** The response head arrived: the backend answers (breaker bookkeeping). */
  responded(ex: HttpExchange): void {
    ex.upstream?.balancer.succeeded(ex.backend!, ex.trial);
    ex.trial = false;
  }

  #uncount(ex: HttpExchange): void {
    if (!ex.counted) return;
    ex.counted = false;
    this.#table.backendActiveAdd(this.#shard, ex.backend!.slot, -1);
  }

  /** The exchange ended (answered, finished, reset or dropped): its counts go back. */
  end(ex: HttpExchange): void {
    this.#uncount(ex);
    if (ex.trial) {
      ex.upstream?.balancer.abandoned(ex.backend!, true);
      ex.trial = false;
    }
    if (ex.inBudget) {
      ex.inBudget = false;
      this.retrying--;
    }
    if (ex.dispatched) {
      ex.dispatched = false;
      this.active--;
    }
  }

  /** A reload renamed nothing but may have moved the listener's slot. */
  configure(slot: number, name: string): void {
    this.#slot = slot;
    this.#name = name;
  }
}

/**
 * The gateway's answer when a retryable failure cannot be retried: the status the backend gave
 * (`retryOn` 503 or 504; its response was dropped for the retry), else 502 for a reset, an
 * invalid response or a failed connect.
 */
function failureCode(status: number): 'unavailable' | 'bad_gateway' | 'timeout' {
  return status === 503 ? 'unavailable' : status === 504 ? 'timeout' : 'bad_gateway';
}

/**
 * Whether the request, head and body, will fit the replay buffer ({@link REPLAY_MAX}). The head
 * is estimated from its fields (a few bytes over, for the request line and the framing field):
 * when in doubt, not.
 */
function fitsReplay(ex: HttpExchange, fields: readonly string[]): boolean {
  let n = ex.head.method.length + ex.head.target.length + 64;
  for (let i = 0; i < fields.length; i++) n += fields[i]!.length + 2;
  return n + ex.head.contentLength <= REPLAY_MAX;
}

function claimKey(v: unknown): string {
  return typeof v === 'string' ? v : v === undefined ? '' : JSON.stringify(v);
}

function dropField(out: string[], name: string): void {
  let w = 0;
  for (let i = 0; i < out.length; i += 2) {
    if (out[i] === name) continue;
    out[w++] = out[i]!;
    out[w++] = out[i + 1]!;
  }
  out.length = w;
}

/**
 * The handlers of every pooled upstream socket of a shard's http listeners: each event goes to
 * the exchange that owns the socket now, inside its connection's guard.
 */
export const httpPoolHandlers: PoolHandlers<HttpConnectionActor> = {
  read(owner, conn, n, buf) {
    return owner.upstreamRead(conn as Conn, Buffer.from(buf.subarray(0, n)));
  },
  closed(owner, conn, err) {
    owner.guard(owner.upstreamClosed, { conn: conn as Conn, err });
  },
  drain(owner, conn) {
    const ex = owner.exchange;
    if (ex === undefined || ex.conn === (conn as Conn)) owner.guard(owner.upstreamDrained, ex);
  },
  timeout(owner, conn) {
    owner.guard(owner.upstreamTimedOut, conn as Conn);
  },
};
