/**
 * The HTTP access log: one pino line per sampled request, written off the request's path in
 * batches. One per shard thread (or per listener), used by that thread only.
 */
import type { Logger } from 'pino';

/** One finished request, as its access-log line shows it (the line's fields are exactly these). */
export interface AccessEntry {
  listener: string;
  /** The route's name; `''` when none matched. */
  route: string;
  method: string;
  /** The request target as received (path and query). */
  path: string;
  /** The status sent to the client. */
  status: number;
  /** From the first request byte to the last response byte. */
  durationMs: number;
  /** The upstream the route sent it to, when it was forwarded. */
  upstream?: string;
  /** The backend address that answered (`10.0.0.5:8080`), when one did. */
  backend?: string;
  requestId: string;
  bytesIn: number;
  bytesOut: number;
  /** The client address the gateway uses (the peer, or the trusted `X-Forwarded-For` entry). */
  remoteAddress: string;
  /** With `telemetry.otlp`: the request's trace id (sampled or not), to find its trace. */
  traceId?: string;
}

/** Options of {@link AccessLog}. */
export interface AccessLogOptions {
  /** The sampling source, `[0, 1)` like `Math.random` (the default); tests inject their own. */
  random?: () => number;
  /** Entries held between two flushes at most; past it they are counted as dropped. Default 10,000. */
  maxBatch?: number;
}

/** The default cap of a batch. */
export const ACCESS_LOG_MAX_BATCH = 10_000;

/**
 * Batched, sampled access log. `record()` costs a sampling draw and an array push: the pino
 * lines (`msg: 'request'` with the entry's fields, level info) are written by one `setImmediate`
 * per batch, after the I/O callbacks that made it. A batch holds at most `maxBatch` entries: when
 * the sink cannot keep up, later entries are dropped, counted, and the flush logs one warn line
 * with the number (`access log: entries dropped, the log cannot keep up`, `dropped`), so memory
 * stays bounded. `close()` writes what is pending and cancels the scheduled flush.
 *
 * The entry object is kept until the flush: the caller must not change it after `record()`.
 *
 * @example
 * const access = new AccessLog(log.child({ listener: 'web' }), 0.1); // one request in ten
 * access.record({ listener: 'web', route: 'api', method: 'GET', path: '/api/users', status: 200, durationMs: 4.2,
 *   upstream: 'api', backend: '10.0.0.5:8080', requestId: 'k3v9q0x2m1c8a7zt-1f', bytesIn: 312, bytesOut: 1840, remoteAddress: '203.0.113.7' });
 * // on shutdown:
 * access.close();
 */
export class AccessLog {
  readonly #log: Logger;
  readonly #sample: number;
  readonly #random: () => number;
  readonly #max: number;
  #batch: AccessEntry[] = [];
  #dropped = 0;
  #immediate: NodeJS.Immediate | undefined;
  #closed = false;
  readonly #onImmediate = (): void => {
    this.#immediate = undefined;
    this.flush();
  };

  /**
   * @param log where the lines go (level info; the warn line at warn).
   * @param sample the share of requests logged, 0 to 1: 1 logs every request, 0 none.
   * @throws RangeError (`code: 'ERR_OUT_OF_RANGE'`) when `sample` is not within 0..1 or `maxBatch` is not a positive integer.
   *
   * @example
   * const access = new AccessLog(log, 1, { random: () => 0.3, maxBatch: 100 });
   */
  constructor(log: Logger, sample: number, opts: AccessLogOptions = {}) {
    if (!(sample >= 0 && sample <= 1)) throw outOfRange(`access log sample must be within 0..1, got ${sample}`);
    const max = opts.maxBatch ?? ACCESS_LOG_MAX_BATCH;
    if (!Number.isSafeInteger(max) || max < 1) throw outOfRange(`access log maxBatch must be a positive integer, got ${max}`);
    this.#log = log;
    this.#sample = sample;
    this.#random = opts.random ?? Math.random;
    this.#max = max;
  }

  /**
   * Takes one finished request: sampled here (`random() < sample`), then queued for the next
   * flush, or counted as dropped when the batch is full. Ignored after `close()`.
   *
   * @example
   * access.record(entry);
   */
  record(e: AccessEntry): void {
    if (this.#closed) return;
    if (this.#sample < 1 && !(this.#random() < this.#sample)) return;
    if (this.#batch.length >= this.#max) this.#dropped++;
    else this.#batch.push(e);
    this.#immediate ??= setImmediate(this.#onImmediate);
  }

  /**
   * Writes the pending lines now, then the warn line when entries were dropped since the last
   * flush, and cancels the scheduled flush.
   *
   * @example
   * access.flush();
   */
  flush(): void {
    if (this.#immediate !== undefined) {
      clearImmediate(this.#immediate);
      this.#immediate = undefined;
    }
    const batch = this.#batch;
    const dropped = this.#dropped;
    if (batch.length > 0) this.#batch = [];
    this.#dropped = 0;
    const log = this.#log;
    for (let i = 0; i < batch.length; i++) log.info(batch[i], 'request');
    if (dropped > 0) log.warn({ dropped, maxBatch: this.#max }, 'access log: entries dropped, the log cannot keep up');
  }

  /**
   * Flushes what is pending and stops: no flush stays scheduled, and later `record()` calls are
   * ignored. Idempotent.
   *
   * @example
   * access.close();
   */
  close(): void {
    if (this.#closed) return;
    this.flush();
    this.#closed = true;
  }
}

function outOfRange(message: string): RangeError {
  return Object.assign(new RangeError(message), { code: 'ERR_OUT_OF_RANGE' });
}
