import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { ParseEvent, RequestParser, type RequestHead } from '../../src/http/codec/index.ts';
import {
  AUTHENTICATED, CHUNKED, Exchange, NO_BODY, PASS_UPGRADE, RequestIdGenerator, compileForwarded, compileHeaderRules,
  compileCors, compileListenerMiddleware, compileRouteMiddleware, isPreflight, isValidRequestId, prepareResponse, prepareUpstream, requestIdOf, serializeRequestHead, serializeResponseHead,
  upstreamTarget,
} from '../../src/http/middleware/index.ts';

const NO_RULES = compileHeaderRules(undefined);
const fw = compileForwarded({});

function parse(raw: string | Buffer): RequestHead {
  const p = new RequestParser({ maxHeaderSize: 65536 });
  p.feed(typeof raw === 'string' ? Buffer.from(raw, 'latin1') : raw);
  expect(p.next()).toBe(ParseEvent.Head);
  return p.head!;
}

function names(out: string[]): string[] {
  return out.filter((_, i) => i % 2 === 0);
}

function prep(headers: string[], flags = 0, rules = NO_RULES) {
  const ex = new Exchange('198.51.100.1', false, 80, fw);
  ex.requestId = 'rid';
  const out: string[] = [];
  prepareUpstream(headers, 'a', ex, rules, flags, out);
  return out;
}

describe('request ids', () => {
  const ids = new RequestIdGenerator('shard');
  test.each([
    ['kept', 'abc-123', 'abc-123'],
    ['kept at 128 characters', 'x'.repeat(128), 'x'.repeat(128)],
    ['kept with punctuation', '"q\\!~', '"q\\!~'],
  ])('%s', (_, id, expected) => {
    expect(requestIdOf(['host', 'a', 'x-request-id', id], ids)).toBe(expected);
  });
  test.each([
    ['too long', 'x'.repeat(129)], ['empty', ''], ['with a space', 'a b'], ['with a tab', 'a\tb'], ['obs-text', 'caf\u00e9'],
  ])('refused when %s: one is generated', (_, id) => {
    const got = requestIdOf(['x-request-id', id], ids);
    expect(got).toMatch(/^shard-[0-9a-z]+$/);
    expect(isValidRequestId(got)).toBe(true);
  });
  test('generated when absent, unique, and different across generators', () => {
    const a = new RequestIdGenerator();
    const b = new RequestIdGenerator();
    expect(a.prefix).not.toBe(b.prefix);
    const seen = new Set<string>();
    for (let i = 0; i < 10_000; i++) seen.add(requestIdOf(['host', 'a'], i % 2 ? a : b));
    expect(seen.size).toBe(10_000);
    for (const id of seen) expect(isValidRequestId(id)).toBe(true);
  });
  test('the chosen id replaces every incoming x-request-id upstream', () => {
    const out = prep(['x-request-id', 'a', 'x-request-id', 'b']);
    expect(out.filter((v, i) => i % 2 === 0 && v === 'x-request-id').length).toBe(1);
    expect(out[out.indexOf('x-request-id') + 1]).toBe('rid');
  });
});

describe('hop-by-hop removal', () => {
  const base = ['host', 'a', 'connection', 'keep-alive, X-Custom, x-other', 'keep-alive', 'timeout=5', 'te', 'trailers',
    'trailer', 'x-t', 'transfer-encoding', 'chunked', 'upgrade', 'websocket', 'proxy-connection', 'keep-alive',
    'proxy-authorization', 'Basic x', 'x-custom', '1', 'x-other', '2', 'content-length', '5', 'accept', '*/*'];
  test.each([
    ['plain request', 0, ['host', 'proxy-authorization', 'accept']],
    ['gateway authenticated', AUTHENTICATED, ['host', 'accept']],
    ['passing an upgrade', PASS_UPGRADE, ['host', 'upgrade', 'proxy-authorization', 'accept']],
  ])('%s', (_, flags, kept) => {
    const out = names(prep(base, flags));
    const own = ['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'x-request-id'];
    expect(out).toEqual([...kept, ...own, ...(flags === PASS_UPGRADE ? ['connection'] : [])]);
  });
  test('Connection listing names across several fields, any case', () => {
    const out = names(prep(['connection', 'X-A', 'connection', ' x-b ,,close', 'x-a', '1', 'x-b', '2', 'x-c', '3']));
    expect(out.slice(0, 1)).toEqual(['x-c']);
  });
  test('an upgrade passes Connection: upgrade', () => {
    const out = prep(['connection', 'Upgrade', 'upgrade', 'websocket'], PASS_UPGRADE);
    expect(out.slice(0, 2)).toEqual(['upgrade', 'websocket']);
    expect(out.slice(-2)).toEqual(['connection', 'upgrade']);
  });
});

describe('route header rules', () => {
  const rules = compileHeaderRules({
    request: { set: { 'X-Env': 'prod', Host: 'internal' }, remove: ['Cookie', 'x-debug'] },
    response: { set: { 'Strict-Transport-Security': 'max-age=63072000' }, remove: ['Server'] },
  });
  test('request: set replaces, remove drops, any case', () => {
    const out = prep(['host', 'a', 'cookie', 's=1', 'x-env', 'dev', 'x-debug', '1', 'accept', '*/*'], 0, rules);
    expect(out.slice(0, 2)).toEqual(['accept', '*/*']);
    expect(out.slice(-4)).toEqual(['x-env', 'prod', 'host', 'internal']);
    expect(names(out).filter((n) => n === 'cookie' || n === 'x-debug')).toEqual([]);
  });
  test('a rule on a gateway field replaces or drops it', () => {
    const own = compileHeaderRules({ request: { set: { 'X-Forwarded-Proto': 'https' }, remove: ['x-forwarded-for', 'X-Request-Id'] } });
    const out = prep(['host', 'a', 'x-forwarded-for', '1.1.1.1'], 0, own);
    expect(out).toEqual(['host', 'a', 'x-forwarded-host', 'a', 'x-forwarded-port', '80', 'x-forwarded-proto', 'https']);
  });
  test('response: hop-by-hop and framing dropped, rules, cors and request id added', () => {
    const ex = new Exchange('198.51.100.1', false, 80, fw);
    ex.requestId = 'rid';
    const cors = compileCors({ origins: ['https://app.example'], credentials: true });
    prepareUpstream(['host', 'a', 'origin', 'https://app.example'], 'a', ex, rules, 0, []);
    const out: string[] = [];
    prepareResponse(['server', 'x', 'connection', 'close, x-hop', 'x-hop', '1', 'keep-alive', 't', 'content-length', '3',
      'x-request-id', 'backend', 'access-control-allow-origin', '*', 'content-type', 'text/plain', 'upgrade', 'h2'], 200, ex, rules, cors, out);
    expect(out).toEqual(['content-type', 'text/plain', 'access-control-allow-origin', 'https://app.example',
      'access-control-allow-credentials', 'true', 'vary', 'Origin', 'x-request-id', 'rid',
      'strict-transport-security', 'max-age=63072000']);
  });
});

describe('upstream target', () => {
  test.each([
    ['/v1/x?q', '/v1', '/x?q'], ['/v1', '/v1', '/'], ['/v1?q', '/v1', '/?q'], ['/v1/x', undefined, '/v1/x'],
    ['http://a.example/v1/x?q', '/v1', '/x?q'], ['http://a.example', undefined, '/'], ['http://a.example?q', undefined, '/?q'],
    ['*', undefined, '*'], ['a.example:443', undefined, 'a.example:443'],
  ])('%s with strip %s is %s', (target, strip, expected) => {
    expect(upstreamTarget(target, strip)).toBe(expected);
  });
});

describe('head serialisers', () => {
  test('the upstream head parses back with the codec, framing as chosen', () => {
    const client = parse('POST /v1/items?x=1 HTTP/1.1\r\nHost: api.example.com\r\nConnection: keep-alive, X-Hop\r\n' +
      'X-Hop: 1\r\nTransfer-Encoding: chunked\r\nAccept: */*\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n');
    const ex = new Exchange('198.51.100.1', false, 8080, fw);
    ex.requestId = 'rid-1';
    const out: string[] = [];
    prepareUpstream(client.headers, client.host, ex, NO_RULES, 0, out);
    for (const framing of [CHUNKED, 42, NO_BODY]) {
      const up = parse(serializeRequestHead(client.method, upstreamTarget(client.target, '/v1'), out, framing));
      expect(up.method).toBe('POST');
      expect(up.target).toBe('/items?x=1');
      expect(up.versionMinor).toBe(1);
      expect(up.chunked).toBe(framing === CHUNKED);
      expect(up.contentLength).toBe(framing >= 0 ? 42 : -1);
      expect(up.headers.slice(0, out.length)).toEqual(out);
      expect(up.headers).not.toContain('x-hop');
    }
  });

  test('any header list the codec accepts round-trips through prepare and serialise', () => {
    const name = fc.stringMatching(/^[a-z0-9!#$%&'*+.^_`|~-]{1,12}$/).filter((n) => !['host', 'content-length', 'transfer-encoding'].includes(n));
    const value = fc.stringMatching(/^[\x21-\x7e\x80-\xff]([\x20-\x7e\x80-\xff]{0,20}[\x21-\x7e\x80-\xff])?$/);
    fc.assert(fc.property(fc.array(fc.tuple(name, value), { maxLength: 12 }), (pairs) => {
      const raw = `GET / HTTP/1.1\r\nhost: a\r\n${pairs.map(([n, v]) => `${n}: ${v}\r\n`).join('')}\r\n`;
      const head = parse(raw);
      const out: string[] = [];
      const ex = new Exchange('10.0.0.1', false, 80, fw);
      ex.requestId = 'r';
      prepareUpstream(head.headers, head.host, ex, NO_RULES, 0, out);
      expect(parse(serializeRequestHead('GET', '/', out, NO_BODY)).headers).toEqual(out);
    }), { numRuns: 300 });
  });

  test('response head with content-length', () => {
    expect(serializeResponseHead(200, 'OK', ['content-type', 'text/plain'], 5).toString('latin1'))
      .toBe('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n');
    expect(serializeResponseHead(204, 'No Content', [], NO_BODY).toString('latin1')).toBe('HTTP/1.1 204 No Content\r\n\r\n');
  });
});

describe('the chain as the connection will call it', () => {
  const route = {
    name: 'api', match: { pathPrefix: '/api', methods: ['GET'] }, upstream: 'api', stripPrefix: true, timeout: 1000, retries: 0, idleTimeout: 60_000, retryOn: ['connect-failure' as const, 'reset' as const],
    websocket: false, cors: { origins: ['https://app.example'], credentials: false },
    headers: { request: { set: { 'X-Env': 'prod' } } },
  };
  const lm = compileListenerMiddleware({ trustedProxies: ['127.0.0.1/32'] }, new RequestIdGenerator('t'));
  const rm = compileRouteMiddleware(route);

  test('a simple GET: id, forwarded headers, strip prefix, rule, framing', () => {
    const head = parse('GET /api/users HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-For: 203.0.113.9\r\nOrigin: https://app.example\r\n\r\n');
    const ex = new Exchange('::ffff:127.0.0.1', false, 8080, lm.forwarded);
    ex.requestId = requestIdOf(head.headers, lm.ids);
    expect(isPreflight(head.method, head.headers)).toBe(false);
    const out: string[] = [];
    prepareUpstream(head.headers, head.host, ex, rm.rules, 0, out);
    const up = parse(serializeRequestHead(head.method, upstreamTarget(head.target, rm.strip), out, NO_BODY));
    expect(up.target).toBe('/users');
    expect(ex.clientAddress).toBe('203.0.113.9');
    expect(up.headers).toEqual(['host', 'a.example', 'origin', 'https://app.example', 'x-forwarded-for', '203.0.113.9, 127.0.0.1',
      'x-forwarded-proto', 'http', 'x-forwarded-host', 'a.example', 'x-forwarded-port', '8080', 'x-request-id', ex.requestId, 'x-env', 'prod']);
    expect(ex.requestId).toMatch(/^t-/);
  });

  test('a preflight is answered from the compiled route whatever its methods', () => {
    const head = parse('OPTIONS /api/users HTTP/1.1\r\nHost: a\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: DELETE\r\nX-Request-Id: pre-1\r\n\r\n');
    expect(isPreflight(head.method, head.headers)).toBe(true);
    const answer = rm.cors!.preflight('https://app.example', undefined, requestIdOf(head.headers, lm.ids), false).toString('latin1');
    expect(answer).toBe('HTTP/1.1 204 No Content\r\naccess-control-allow-origin: https://app.example\r\n' +
      'access-control-allow-methods: GET\r\nvary: Origin\r\nx-request-id: pre-1\r\n\r\n');
  });
});
