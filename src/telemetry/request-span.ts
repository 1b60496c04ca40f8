/**
 * What the request path does with a request's span once it has one: the W3C trace context sent
 * upstream, and the span's attributes and status at the exchange's end. Types only from
 * OpenTelemetry: this module is loaded in every shard, tracing on or off, and the SDK is not
 * (see `tracer.ts`, loaded when `telemetry.otlp` is set).
 */
import type { Attributes, Span } from '@opentelemetry/api';
import type { HttpExchange } from '../http/exchange.ts';

/** `SpanStatusCode.ERROR` (the enum is not imported: it would load the API in every shard). */
const STATUS_ERROR = 2;

/**
 * Puts the gateway span's context in the upstream request's fields: `traceparent` with this
 * span's id as the parent (whatever the client sent is replaced), and `tracestate` as the
 * caller's (dropped when the caller sent no valid `traceparent`, as W3C Trace Context asks).
 *
 * @example
 * injectTraceContext(ex.span, conn.out); // out: ['host', 'a', 'traceparent', '00-…-…-01']
 */
export function injectTraceContext(span: Span, out: string[]): void {
  let w = 0;
  for (let i = 0; i < out.length; i += 2) {
    const name = out[i]!;
    if (name === 'traceparent' || name === 'tracestate') continue;
    out[w++] = name;
    out[w++] = out[i + 1]!;
  }
  out.length = w;
  const sc = span.spanContext();
  out.push('traceparent', `00-${sc.traceId}-${sc.spanId}-0${sc.traceFlags & 1}`);
  const state = sc.traceState?.serialize();
  if (state) out.push('tracestate', state);
}

/** Who ended the request, for the span's attributes. */
export interface SpanEndInfo {
  listener: string;
  /** The client's address (after trusted `X-Forwarded-For`). */
  client: string;
}

/**
 * Ends the request's span with what the exchange knows now: route, upstream, backend, status,
 * retries, request id. A 5xx (a 502, 503 or 504 of the gateway, or the backend's) is an error.
 * A span that is not sampled records nothing and ends at no cost.
 */
export function endRequestSpan(span: Span, ex: HttpExchange, info: SpanEndInfo): void {
  if (!span.isRecording()) return;
  const attrs: Attributes = {
    'gatehouse.listener': info.listener,
    'gatehouse.request_id': ex.requestId,
    'http.request.resend_count': ex.attempts,
    'client.address': info.client,
  };
  const r = ex.route;
  if (r !== undefined) {
    attrs['gatehouse.route'] = r.name;
    attrs['http.route'] = r.config.match.pathPrefix;
    span.updateName(`${ex.head.method} ${r.config.match.pathPrefix}`);
  }
  if (ex.upstream !== undefined) attrs['gatehouse.upstream'] = ex.upstream.config.name;
  if (ex.backend !== undefined) attrs['gatehouse.backend'] = ex.backend.address;
  if (ex.status > 0) attrs['http.response.status_code'] = ex.status;
  span.setAttributes(attrs);
  if (ex.status >= 500) {
    span.setAttribute('error.type', String(ex.status));
    span.setStatus({ code: STATUS_ERROR, message: `HTTP ${ex.status}` });
  }
  span.end();
}
