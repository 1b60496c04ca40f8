/**
 * OpenTelemetry tracing of HTTP requests, end to end: the daemon runs from its CLI as a child
 * process with two worker-thread shards (each exports its own spans), in front of two node:http
 * backends that record the `traceparent` they receive, and a node:http OTLP/HTTP receiver that
 * collects the JSON export requests. What is asserted is what a collector and a backend see:
 * span attributes and status, trace continuity with the client's `traceparent`, the backend's
 * parent being the gateway's span, sampling, reload and shutdown flushes, and no exporter traffic
 * at all without `telemetry`.
 */
import http from 'node:http';
import { once } from 'node:events';
import type net from 'node:net';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { parseConfig } from '../../src/config/load.ts';
import { ConfigError, formatConfigIssue } from '../../src/errors.ts';
import { redactConfig } from '../../src/config/redact.ts';
import { Daemon, tempDir, until } from '../helpers/daemon.ts';
import { refusedPort } from '../helpers/ports.ts';

// ---- an OTLP/HTTP receiver -------------------------------------------------------------------

type AnyValue = { stringValue?: string; intValue?: number | string; boolValue?: boolean; doubleValue?: number };
interface KeyValue {
  key: string;
  value: AnyValue;
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes: KeyValue[];
  status?: { code?: number; message?: string };
}
interface ExportRequest {
  resourceSpans: { resource: { attributes: KeyValue[] }; scopeSpans: { spans: OtlpSpan[] }[] }[];
}

/** A received span with its attributes as a plain object and its resource's. */
interface Received {
  span: OtlpSpan;
  attrs: Record<string, string | number | boolean | undefined>;
  resource: Record<string, string | number | boolean | undefined>;
}

interface Receiver {
  url: string;
  /** Every POST received (path, content type). */
  posts: { path: string; contentType: string }[];
  spans: Received[];
  close(): Promise<void>;
}

function plain(kvs: KeyValue[]): Record<string, string | number | boolean | undefined> {
  const o: Record<string, string | number | boolean | undefined> = {};
  for (const { key, value: v } of kvs) o[key] = v.stringValue ?? (v.intValue !== undefined ? Number(v.intValue) : (v.boolValue ?? v.doubleValue));
  return o;
}

/** A collector stand-in on 127.0.0.1:0: accepts OTLP/HTTP JSON on POST /v1/traces. */
async function startReceiver(): Promise<Receiver> {
  const posts: Receiver['posts'] = [];
  const spans: Received[] = [];
  const server = http.createServer((req, res) => {
    posts.push({ path: req.url ?? '', contentType: req.headers['content-type'] ?? '' });
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d));
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/traces') {
        res.statusCode = 404;
        return res.end();
      }
      const msg = JSON.parse(body) as ExportRequest;
      for (const rs of msg.resourceSpans) {
        const resource = plain(rs.resource.attributes);
        for (const ss of rs.scopeSpans) for (const span of ss.spans) spans.push({ span, attrs: plain(span.attributes), resource });
      }
      res.setHeader('content-type', 'application/json');
      res.end('{}');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}/v1/traces`,
    posts,
    spans,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}

// ---- backends --------------------------------------------------------------------------------

interface Seen {
  path: string;
  traceparent: string | undefined;
  tracestate: string | undefined;
}

interface Backend {
  address: string;
  seen: Seen[];
  close(): Promise<void>;
}

/** Answers 503 on paths under /fail, else 200; records the trace headers it got. */
async function startBackend(): Promise<Backend> {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    const h = req.headers;
    seen.push({ path: req.url ?? '', traceparent: h.traceparent as string | undefined, tracestate: h.tracestate as string | undefined });
    res.statusCode = req.url?.startsWith('/fail') ? 503 : 200;
    res.end('ok');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    seen,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}

// ---- the daemon ------------------------------------------------------------------------------

function config(backends: Backend[], telemetry: string): string {
  return `
admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2, shutdownTimeout: 5s }
log: { level: info }
upstreams:
  - name: app
    healthCheck: { enabled: false }
    backends: [${backends.map((b) => `"${b.address}"`).join(', ')}]
listeners:
  - name: web
    protocol: http
    listen: "127.0.0.1:0"
    accessLog: true
    routes:
      - { name: api, match: { pathPrefix: /api }, upstream: app }
      - { name: fail, match: { pathPrefix: /fail }, upstream: app, retries: 1, retryOn: [503] }
${telemetry}`;
}

const otlp = (url: string, ratio: number): string => `
telemetry:
  otlp:
    endpoint: ${url}
    serviceName: gh-test
    sampleRatio: ${ratio}
    headers: { x-api-key: k1 }
`;

/** One request on a new connection; resolves with the status. */
async function get(port: number, path: string, headers: Record<string, string> = {}): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { headers: { ...headers, connection: 'close' }, signal: AbortSignal.timeout(10_000) });
  await res.arrayBuffer();
  return res.status;
}

const hex = (n: number): string => Array.from({ length: n }, () => Math.floor(Math.random() * 16).toString(16)).join('');

/** The span of trace `traceId` once the receiver has it (10 s at most). */
async function spanOf(receiver: Receiver, traceId: string): Promise<Received> {
  return (await until(() => receiver.spans.find((s) => s.span.traceId === traceId), 10_000, `the span of trace ${traceId}`))!;
}

/** The one backend request of this path (across both backends). */
function seenOf(backends: Backend[], path: string): Seen[] {
  return backends.flatMap((b) => b.seen.filter((s) => s.path === path));
}

describe('tracing with telemetry.otlp', () => {
  let receiver: Receiver;
  let backends: Backend[];
  let gh: Daemon;
  let port: number;
  const dir = tempDir();
  let file: string;

  beforeAll(async () => {
    receiver = await startReceiver();
    backends = [await startBackend(), await startBackend()];
    file = dir.write('gatehouse.yaml', config(backends, otlp(receiver.url, 1)));
    gh = await Daemon.start(file);
    port = gh.port('web');
  });

  afterAll(async () => {
    await gh?.[Symbol.asyncDispose]();
    await Promise.all([receiver?.close(), ...(backends ?? []).map((b) => b.close())]);
    dir[Symbol.dispose]();
  });

  test("a request with a traceparent: the span is its child, and the backend's parent is the gateway span", async () => {
    const traceId = hex(32);
    const parent = hex(16);
    expect(await get(port, '/api/items?secret=1', { traceparent: `00-${traceId}-${parent}-01`, tracestate: 'vendor=abc' })).toBe(200);

    const got = await spanOf(receiver, traceId);
    expect(got.span.parentSpanId).toBe(parent);
    expect(got.span.kind).toBe(2); // SPAN_KIND_SERVER
    expect(got.span.name).toBe('GET /api');
    expect(got.attrs).toMatchObject({
      'http.request.method': 'GET',
      'url.path': '/api/items',
      'http.route': '/api',
      'http.response.status_code': 200,
      'http.request.resend_count': 0,
      'gatehouse.route': 'api',
      'gatehouse.upstream': 'app',
      'gatehouse.listener': 'web',
      'client.address': '127.0.0.1',
    });
    expect(backends.map((b) => b.address)).toContain(got.attrs['gatehouse.backend']);
    expect(got.span.status?.code ?? 0).toBe(0);
    expect(got.resource['service.name']).toBe('gh-test');
    expect(receiver.posts.every((p) => p.path === '/v1/traces' && p.contentType.startsWith('application/json'))).toBe(true);

    // The backend saw the same trace, with the gateway's span as its parent, and the caller's tracestate.
    const [seen] = seenOf(backends, '/api/items?secret=1');
    expect(seen?.traceparent).toBe(`00-${traceId}-${got.span.spanId}-01`);
    expect(seen?.tracestate).toBe('vendor=abc');
    // The access log line names the trace.
    const line = await gh.waitForLog((l) => l.msg === 'request' && l.path === '/api/items?secret=1');
    expect(line.traceId).toBe(traceId);
  });

  test('a request without a traceparent starts a trace; a 503 after a retry is an error span', async () => {
    expect(await get(port, '/fail/x')).toBe(503);
    const tried = seenOf(backends, '/fail/x');
    expect(tried).toHaveLength(2); // the first try and the retry
    const tp = tried[0]!.traceparent!;
    expect(tp).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    // One span for the request: both tries carry its id.
    expect(tried[1]!.traceparent).toBe(tp);
    const [, traceId, spanId] = tp.split('-');

    const got = await spanOf(receiver, traceId);
    expect(got.span.spanId).toBe(spanId);
    expect(got.span.parentSpanId ?? '').toBe('');
    expect(got.attrs).toMatchObject({ 'http.response.status_code': 503, 'http.request.resend_count': 1, 'error.type': '503', 'gatehouse.route': 'fail' });
    expect(got.span.status?.code).toBe(2); // STATUS_CODE_ERROR
  });

  test('a request no route matches gets a span too (404, no upstream)', async () => {
    const traceId = hex(32);
    expect(await get(port, '/nowhere', { traceparent: `00-${traceId}-${hex(16)}-01` })).toBe(404);
    const got = await spanOf(receiver, traceId);
    expect(got.attrs['http.response.status_code']).toBe(404);
    expect(got.attrs['gatehouse.upstream']).toBeUndefined();
    expect(got.span.status?.code ?? 0).toBe(0);
  });

  test('sampleRatio 0 (reloaded): nothing is exported, the backend still gets a traceparent, unsampled', async () => {
    dir.write('gatehouse.yaml', config(backends, otlp(receiver.url, 0)));
    const r = await gh.admin('/reload', { method: 'POST' });
    expect(r.status).toBe(200);
    expect(((await r.json()) as { changed: string[] }).changed).toContain('telemetry');
    const before = receiver.spans.length;

    expect(await get(port, '/api/unsampled')).toBe(200);
    const [seen] = seenOf(backends, '/api/unsampled');
    expect(seen?.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
    // A caller that did not sample: its decision is kept (parent-based).
    const traceId = hex(32);
    expect(await get(port, '/api/unsampled-parent', { traceparent: `00-${traceId}-${hex(16)}-00` })).toBe(200);
    expect(seenOf(backends, '/api/unsampled-parent')[0]?.traceparent).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-00$`));
    // A caller that sampled wins over the ratio.
    const sampledId = hex(32);
    expect(await get(port, '/api/sampled-parent', { traceparent: `00-${sampledId}-${hex(16)}-01` })).toBe(200);
    await until(() => receiver.spans.some((s) => s.span.traceId === sampledId), 10_000, 'the sampled span exported');

    // Drain flushes every span ended: once the daemon exited, what was not received was never recorded.
    expect(await gh.stop('SIGTERM')).toBe(0);
    const after = receiver.spans.slice(before).map((s) => s.span.traceId);
    expect(after).toEqual([sampledId]);
  });
});

describe('tracing flushes and turns off', () => {
  test('a reload that removes telemetry exports what was held; requests after it are not traced', async () => {
    await using receiver = disposable(await startReceiver());
    await using backend = disposable(await startBackend());
    using dir = tempDir();
    const file = dir.write('gatehouse.yaml', config([backend], otlp(receiver.url, 1)));
    await using gh = await Daemon.start(file);
    const port = gh.port('web');

    const traceId = hex(32);
    expect(await get(port, '/api/before', { traceparent: `00-${traceId}-${hex(16)}-01` })).toBe(200);
    dir.write('gatehouse.yaml', config([backend], ''));
    const r = await gh.admin('/reload', { method: 'POST' });
    expect(r.status).toBe(200);
    await until(() => receiver.spans.some((s) => s.span.traceId === traceId), 10_000, 'the span of the request before the reload');

    const posts = receiver.posts.length;
    // Off: the client's traceparent goes through untouched and none is added.
    const incoming = `00-${hex(32)}-${hex(16)}-01`;
    expect(await get(port, '/api/after', { traceparent: incoming })).toBe(200);
    expect(await get(port, '/api/after-none')).toBe(200);
    expect(backend.seen.find((s) => s.path === '/api/after')?.traceparent).toBe(incoming);
    expect(backend.seen.find((s) => s.path === '/api/after-none')?.traceparent).toBeUndefined();
    const line = await gh.waitForLog((l) => l.msg === 'request' && l.path === '/api/after');
    expect(line).not.toHaveProperty('traceId');
    expect(await gh.stop('SIGTERM')).toBe(0);
    expect(receiver.posts.length).toBe(posts);
  });

  test('spans of the last requests are exported at shutdown (drain)', async () => {
    await using receiver = disposable(await startReceiver());
    await using backend = disposable(await startBackend());
    using dir = tempDir();
    await using gh = await Daemon.start(dir.write('gatehouse.yaml', config([backend], otlp(receiver.url, 1))));
    const ids = Array.from({ length: 6 }, () => hex(32));
    for (const id of ids) expect(await get(gh.port('web'), '/api/last', { traceparent: `00-${id}-${hex(16)}-01` })).toBe(200);
    expect(await gh.stop('SIGTERM')).toBe(0);
    expect(receiver.spans.map((s) => s.span.traceId)).toEqual(expect.arrayContaining(ids));
  });

  test('a collector that refuses: requests are served, the shard logs the failed export', async () => {
    await using backend = disposable(await startBackend());
    using dir = tempDir();
    const url = `http://127.0.0.1:${await refusedPort()}/v1/traces`;
    await using gh = await Daemon.start(dir.write('gatehouse.yaml', config([backend], otlp(url, 1))));
    for (let i = 0; i < 3; i++) expect(await get(gh.port('web'), `/api/lost-${i}`)).toBe(200);
    const line = await gh.waitForLog((l) => l.msg === 'span export failed', 15_000);
    expect(line).toMatchObject({ level: 40, actorType: 'telemetry', suppressed: 0 });
    expect(typeof line.shard).toBe('number');
  });

  test('without a telemetry key: no exporter traffic, even with the OTEL_* variables set', async () => {
    await using receiver = disposable(await startReceiver());
    await using backend = disposable(await startBackend());
    using dir = tempDir();
    // Were an exporter made anyway, these would send it to the receiver.
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = receiver.url.replace('/v1/traces', '');
    process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = receiver.url;
    let gh: Daemon;
    try {
      gh = await Daemon.start(dir.write('gatehouse.yaml', config([backend], '')));
    } finally {
      delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
      delete process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
    }
    await using _gh = gh;
    for (let i = 0; i < 5; i++) expect(await get(gh.port('web'), `/api/plain-${i}`)).toBe(200);
    expect(backend.seen.every((s) => s.traceparent === undefined)).toBe(true);
    expect(await gh.stop('SIGTERM')).toBe(0);
    expect(receiver.posts).toEqual([]);
  });
});

describe('the telemetry key', () => {
  /** The located messages of a config that does not parse (empty: it parses). */
  function problems(yaml: string): string[] {
    try {
      parseConfig(yaml, 'gh.yaml');
      return [];
    } catch (err) {
      if (err instanceof ConfigError) return err.issues.map(formatConfigIssue);
      throw err;
    }
  }

  test('defaults, and what a bad value says', () => {
    expect(parseConfig('telemetry:\n  otlp: { endpoint: "http://127.0.0.1:4318/v1/traces" }', 'gh.yaml').telemetry).toEqual({
      otlp: { endpoint: 'http://127.0.0.1:4318/v1/traces', headers: {}, serviceName: 'gatehouse', sampleRatio: 1 },
    });
    expect(parseConfig('telemetry: {}', 'gh.yaml').telemetry).toEqual({});
    expect(parseConfig('log: { level: info }', 'gh.yaml').telemetry).toBeUndefined();
    expect(problems('telemetry:\n  otlp: { sampleRatio: 0.5 }')).toEqual(['gh.yaml:2:9 telemetry.otlp.endpoint: required: the OTLP/HTTP traces URL, like http://127.0.0.1:4318/v1/traces']);
    expect(problems('telemetry:\n  otlp:\n    endpoint: grpc://collector:4317\n    sampleRatio: 1.5\n    headers: { "bad header": x }')).toEqual([
      'gh.yaml:3:15 telemetry.otlp.endpoint: expected an http:// or https:// URL, got a string ("grpc://collector:4317")',
      'gh.yaml:4:18 telemetry.otlp.sampleRatio: must be <= 1, got 1.5',
      'gh.yaml:5:30 telemetry.otlp.headers.bad header: expected a header name, got a string ("bad header")',
    ]);
  });

  test('a header value from ${env:...} is redacted in /config', () => {
    process.env.GH_OTEL_TEST_KEY = 'k-secret';
    try {
      const cfg = parseConfig('telemetry:\n  otlp: { endpoint: "http://c:4318/v1/traces", headers: { x-api-key: "${env:GH_OTEL_TEST_KEY}" } }', 'gh.yaml');
      expect(cfg.telemetry?.otlp?.headers['x-api-key']).toBe('k-secret');
      expect(redactConfig(cfg).telemetry?.otlp?.headers['x-api-key']).toBe('[redacted]');
    } finally {
      delete process.env.GH_OTEL_TEST_KEY;
    }
  });
});

/** `await using` for the helpers here, which have `close()`. */
function disposable<T extends { close(): Promise<void> }>(x: T): T & AsyncDisposable {
  return Object.assign(x, { [Symbol.asyncDispose]: () => x.close() });
}
