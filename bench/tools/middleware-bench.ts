/**
 * Middleware micro-benchmark: the whole per-request chain of src/http/middleware on a typical
 * browser-like request (12 fields, a trusted proxy in front, CORS on, one header rule, strip
 * prefix): request id, forwarded headers and client address, hop-by-hop removal, upstream head
 * serialisation, then the response side. The codec's parse is not included (bench it apart).
 * Also compares the request id generator with crypto.randomUUID().
 *   npm exec -- node bench/tools/middleware-bench.ts [--count 2000000]
 */
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { ParseEvent, RequestParser } from '../../src/http/codec/index.ts';
import type { RouteConfig } from '../../src/config/types.ts';
import {
  Exchange, NO_BODY, RequestIdGenerator, compileListenerMiddleware, compileRouteMiddleware, isPreflight, prepareResponse,
  prepareUpstream, requestIdOf, serializeRequestHead, serializeResponseHead, upstreamTarget,
} from '../../src/http/middleware/index.ts';

const { values } = parseArgs({ options: { count: { type: 'string', default: '2000000' } } });
const COUNT = Number(values.count);

const raw = Buffer.from(
  'GET /api/v1/users/42?expand=orders HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0\r\n' +
  'Accept: application/json\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n' +
  'Origin: https://app.example.com\r\nConnection: keep-alive\r\nCookie: session=abc123; theme=dark\r\n' +
  'X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nSec-Fetch-Mode: cors\r\nReferer: https://app.example.com/\r\n\r\n',
);
const parser = new RequestParser({ maxHeaderSize: 16384 });
parser.feed(raw);
if (parser.next() !== ParseEvent.Head) throw new Error('bench request did not parse');
const head = parser.head!;

const route: RouteConfig = {
  name: 'api', match: { host: 'api.example.com', pathPrefix: '/api' }, upstream: 'api', stripPrefix: true,
  timeout: 30_000, retries: 0, idleTimeout: 60_000, retryOn: ['connect-failure', 'reset'], websocket: false,
  cors: { origins: ['https://app.example.com'], credentials: true, maxAge: 600 },
  headers: { request: { set: { 'x-env': 'prod' } }, response: { remove: ['server'] } },
};
const lm = compileListenerMiddleware({ trustedProxies: ['10.0.0.0/8'] });
const rm = compileRouteMiddleware(route);
const respHeaders = ['server', 'nginx', 'date', 'Fri, 04 Dec 2026 17:00:00 GMT', 'content-type', 'application/json',
  'content-length', '512', 'connection', 'keep-alive', 'cache-control', 'no-store'];

const ex = new Exchange('::ffff:10.0.0.5', true, 443, lm.forwarded);
const out: string[] = [];
const resp: string[] = [];
let sink = 0;

function chain(): void {
  ex.requestId = requestIdOf(head.headers, lm.ids);
  if (rm.cors !== undefined && isPreflight(head.method, head.headers)) return;
  prepareUpstream(head.headers, head.host, ex, rm.rules, 0, out);
  const up = serializeRequestHead(head.method, upstreamTarget(head.target, rm.strip), out, NO_BODY);
  prepareResponse(respHeaders, 200, ex, rm.rules, rm.cors, resp);
  const down = serializeResponseHead(200, 'OK', resp, 512);
  sink += up.length + down.length;
}

function measure(label: string, n: number, f: () => void): number {
  for (let i = 0; i < Math.min(n, 200_000); i++) f(); // warm up
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) f();
  const ns = Number(process.hrtime.bigint() - t0) / n;
  console.log(`${label.padEnd(44)} ${ns.toFixed(1).padStart(8)} ns/op`);
  return ns;
}

const ids = new RequestIdGenerator();
let idSink = 0;
measure('request id: prefix + base36 counter', COUNT, () => { idSink += ids.next().length; });
measure('request id: crypto.randomUUID()', COUNT, () => { idSink += randomUUID().length; });
measure('whole chain (request + response heads)', COUNT, chain);
console.log(`client ${ex.clientAddress}, upstream head ${serializeRequestHead(head.method, upstreamTarget(head.target, rm.strip), out, NO_BODY).length} bytes (sink ${sink + idSink > 0})`);
