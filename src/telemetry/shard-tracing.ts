/**
 * Tracing in one shard: which tracer (if any) new requests use, loaded, replaced and flushed as
 * the config says. The http listeners' connections read {@link ShardTracing.tracer} once per
 * request head: `undefined` (tracing off) costs that one check and nothing else.
 */
import { isDeepStrictEqual } from 'node:util';
import type { Logger } from 'pino';
import type { OtlpConfig } from '../config/types.ts';
import type { RequestTracer } from './tracer.ts';

/**
 * The tracer of a shard, swapped by a reload. The SDK module is imported the first time
 * `telemetry.otlp` is set.
 *
 * @example
 * const tracing = new ShardTracing(0, log);
 * tracing.configure(shardConfig.telemetry);
 * await tracing.ready;               // the tracer is in place
 * const span = tracing.tracer?.start(head);
 * await tracing.flush();             // at drain
 */
export class ShardTracing {
  /** The tracer for new requests; `undefined` when tracing is off (or still loading). */
  tracer: RequestTracer | undefined;
  /** Settles once the last `configure` took effect (never rejects). */
  ready: Promise<void> = Promise.resolve();
  readonly #shard: number;
  readonly #log: Logger;
  #config: OtlpConfig | undefined;
  #generation = 0;

  constructor(shard: number, log: Logger) {
    this.#shard = shard;
    this.#log = log.child({ actorType: 'telemetry' });
  }

  /**
   * Applies `telemetry.otlp` (absent: off). A changed config replaces the tracer once the new
   * one is made (requests meanwhile use the old one); the old one exports what it holds and
   * shuts down in the background, and spans of requests still in flight on it are dropped.
   * Returns {@link ready}.
   */
  configure(config: OtlpConfig | undefined): Promise<void> {
    if (isDeepStrictEqual(config, this.#config)) return this.ready;
    this.#config = config;
    const gen = ++this.#generation;
    if (config === undefined) {
      this.#retire();
      this.ready = Promise.resolve();
      return this.ready;
    }
    this.ready = import('./tracer.ts').then(
      ({ RequestTracer }) => {
        if (gen !== this.#generation) return;
        this.#retire();
        this.tracer = new RequestTracer(config, this.#shard, this.#log);
        this.#log.debug({ endpoint: config.endpoint, sampleRatio: config.sampleRatio }, 'tracing on');
      },
      (err: unknown) => this.#log.error({ err }, 'tracing could not start: requests are not traced'),
    );
    return this.ready;
  }

  /** The tracer in use is taken out: new requests are not traced by it, and what it holds is exported. */
  #retire(): void {
    const old = this.tracer;
    this.tracer = undefined;
    if (old !== undefined) void this.#shutdown(old);
  }

  /** Exports the spans ended so far (at drain: before the thread may be terminated). */
  async flush(): Promise<void> {
    await this.ready;
    await this.tracer?.flush().catch((err: unknown) => this.#log.warn({ err }, 'span flush failed'));
  }

  /** Tracing off for good: what is left is exported. */
  async close(): Promise<void> {
    this.#config = undefined;
    this.#generation++;
    const t = this.tracer;
    this.tracer = undefined;
    if (t !== undefined) await this.#shutdown(t);
  }

  async #shutdown(t: RequestTracer): Promise<void> {
    await t.shutdown().catch((err: unknown) => this.#log.warn({ err }, 'span export at tracer shutdown failed'));
  }
}
