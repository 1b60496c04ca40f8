/**
 * The OpenTelemetry SDK of one shard: a tracer provider with a parent-based ratio sampler and a
 * batch span processor that exports to the OTLP/HTTP endpoint (JSON) from this thread. Loaded
 * by `ShardTracing` only when `telemetry.otlp` is set, so a shard without tracing never loads
 * the SDK.
 */
import { ROOT_CONTEXT, SpanKind, trace, type Context, type Span, type Tracer } from '@opentelemetry/api';
import { TraceState, parseTraceParent, setGlobalErrorHandler } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, ParentBasedSampler, TraceIdRatioBasedSampler, TracerProvider } from '@opentelemetry/sdk-trace';
import { ATTR_HTTP_REQUEST_METHOD, ATTR_SERVICE_NAME, ATTR_URL_PATH } from '@opentelemetry/semantic-conventions';
import type { Logger } from 'pino';
import type { OtlpConfig } from '../config/types.ts';
import type { RequestHead } from '../http/codec/head.ts';
import { headerValue } from '../http/routes.ts';

/** How long one export, or a flush at drain, may take. */
const EXPORT_TIMEOUT_MS = 5_000;
/** Spans wait at most this long in a shard before they are sent. */
const EXPORT_DELAY_MS = 1_000;
/** Export failures are logged at most once per this interval per shard (a collector that is down). */
const ERROR_LOG_INTERVAL_MS = 30_000;

/**
 * One shard's tracer.
 *
 * @example
 * const t = new RequestTracer(cfg.telemetry.otlp, 0, log);
 * const span = t.start(head); // SERVER span, child of the client's traceparent if valid
 * await t.shutdown();         // exports what is left
 */
export class RequestTracer {
  readonly #provider: TracerProvider;
  readonly #tracer: Tracer;

  constructor(cfg: OtlpConfig, shard: number, log: Logger) {
    const exporter = new OTLPTraceExporter({ url: cfg.endpoint, headers: { ...cfg.headers }, timeoutMillis: EXPORT_TIMEOUT_MS });
    this.#provider = new TracerProvider({
      resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: cfg.serviceName, 'gatehouse.shard': shard }),
      sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(cfg.sampleRatio) }),
      spanProcessors: [new BatchSpanProcessor({ exporter, scheduledDelayMillis: EXPORT_DELAY_MS, exportTimeoutMillis: EXPORT_TIMEOUT_MS })],
    });
    this.#tracer = this.#provider.getTracer('gatehouse');
    installErrorLog(log);
  }

  /**
   * A SERVER span for a request head: the child of the client's `traceparent` (and
   * `tracestate`) when it is valid, else the root of a new trace. Not sampled: a span that
   * records nothing but still has ids, so the upstream gets a `traceparent` with flags `00`.
   */
  start(head: RequestHead): Span {
    const q = head.target.indexOf('?');
    return this.#tracer.startSpan(
      head.method,
      { kind: SpanKind.SERVER, attributes: { [ATTR_HTTP_REQUEST_METHOD]: head.method, [ATTR_URL_PATH]: q < 0 ? head.target : head.target.slice(0, q) } },
      parentOf(head.headers),
    );
  }

  /** Exports the spans ended so far. */
  flush(): Promise<void> {
    return this.#provider.forceFlush({ timeoutMillis: EXPORT_TIMEOUT_MS });
  }

  /** Exports what is left, then drops every span ended after. */
  shutdown(): Promise<void> {
    return this.#provider.shutdown();
  }
}

/** The context of the caller's `traceparent`, or the root context when there is none valid. */
function parentOf(headers: readonly string[]): Context {
  const tp = headerValue(headers, 'traceparent');
  if (tp === undefined) return ROOT_CONTEXT;
  const sc = parseTraceParent(tp.trim());
  if (sc === null) return ROOT_CONTEXT;
  sc.isRemote = true;
  const ts = headerValue(headers, 'tracestate');
  if (ts !== undefined) sc.traceState = new TraceState(ts);
  return trace.setSpanContext(ROOT_CONTEXT, sc);
}

let errorLog: { log: Logger; last: number; suppressed: number } | undefined;

/**
 * OpenTelemetry reports export failures to a global handler (one per thread): here a warning in
 * the shard's log, at most once per {@link ERROR_LOG_INTERVAL_MS}, with the count of those
 * left out.
 */
function installErrorLog(log: Logger): void {
  if (errorLog !== undefined) {
    errorLog.log = log;
    return;
  }
  const state = { log, last: 0, suppressed: 0 };
  errorLog = state;
  setGlobalErrorHandler((err) => {
    const now = Date.now();
    if (now - state.last < ERROR_LOG_INTERVAL_MS) {
      state.suppressed++;
      return;
    }
    state.log.warn({ err, suppressed: state.suppressed, actorType: 'telemetry' }, 'span export failed');
    state.last = now;
    state.suppressed = 0;
  });
}
