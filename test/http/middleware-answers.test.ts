import { describe, expect, test } from 'vitest';
import { ERROR_STATUS, compileCors, gatewayAnswer, isPreflight, reasonPhrase, type GatewayErrorCode } from '../../src/http/middleware/index.ts';

/** Splits a serialised response into status line, lowercase field map (multi-valued) and body. */
function read(buf: Buffer) {
  const s = buf.toString('latin1');
  const end = s.indexOf('\r\n\r\n');
  const [statusLine, ...lines] = s.slice(0, end).split('\r\n');
  const fields = new Map<string, string[]>();
  for (const l of lines) {
    const c = l.indexOf(': ');
    const n = l.slice(0, c).toLowerCase();
    fields.set(n, [...(fields.get(n) ?? []), l.slice(c + 2)]);
  }
  return { statusLine, fields, body: s.slice(end + 4) };
}

describe('gateway answers', () => {
  test.each(Object.entries(ERROR_STATUS) as [GatewayErrorCode, number][])('%s is %i with a JSON body of the right length', (code, status) => {
    const r = read(gatewayAnswer(code, 'rid-7'));
    expect(r.statusLine).toBe(`HTTP/1.1 ${status} ${reasonPhrase(status)}`);
    expect(reasonPhrase(status)).not.toBe('');
    expect(r.fields.get('content-type')).toEqual(['application/json']);
    expect(r.fields.get('x-request-id')).toEqual(['rid-7']);
    expect(r.fields.get('content-length')).toEqual([String(Buffer.byteLength(r.body))]);
    expect(JSON.parse(r.body)).toEqual({ error: code, requestId: 'rid-7' });
    expect(r.fields.has('connection')).toBe(false);
  });

  test('extra fields and connection: close', () => {
    const r = read(gatewayAnswer('rate_limited', 'r', { retryAfter: 0.2, close: true }));
    expect(r.fields.get('retry-after')).toEqual(['1']);
    expect(r.fields.get('connection')).toEqual(['close']);
    expect(read(gatewayAnswer('rate_limited', 'r', { retryAfter: 2.5 })).fields.get('retry-after')).toEqual(['3']);
    expect(read(gatewayAnswer('method_not_allowed', 'r', { allow: 'GET, HEAD' })).fields.get('allow')).toEqual(['GET, HEAD']);
    const auth = read(gatewayAnswer('unauthorized', 'r', { wwwAuthenticate: 'Bearer realm="gatehouse"' }));
    expect(auth.fields.get('www-authenticate')).toEqual(['Bearer realm="gatehouse"']);
  });

  test('a request id with quotes and backslashes stays valid JSON', () => {
    const id = 'a"b\\c';
    const r = read(gatewayAnswer('no_route', id));
    expect(JSON.parse(r.body).requestId).toBe(id);
    expect(r.fields.get('content-length')).toEqual([String(r.body.length)]);
  });

  test('an answer to HEAD has the length but no body', () => {
    const full = read(gatewayAnswer('no_route', 'r'));
    const head = read(gatewayAnswer('no_route', 'r', { head: true }));
    expect(head.body).toBe('');
    expect(head.fields.get('content-length')).toEqual(full.fields.get('content-length'));
  });
});

describe('CORS', () => {
  const listed = 'https://app.example';
  test.each([
    ['OPTIONS', ['origin', listed, 'access-control-request-method', 'PUT'], true],
    ['OPTIONS', ['origin', listed], false],
    ['OPTIONS', ['access-control-request-method', 'PUT'], false],
    ['GET', ['origin', listed, 'access-control-request-method', 'PUT'], false],
  ])('isPreflight(%s, %j) is %s', (method, headers, expected) => {
    expect(isPreflight(method, headers)).toBe(expected);
  });

  test.each([
    ['listed origin, defaults', { origins: [listed], credentials: false }, listed, 'x-a', {
      'access-control-allow-origin': [listed], 'access-control-allow-methods': ['GET, HEAD, POST, PUT, DELETE, PATCH'],
      'access-control-allow-headers': ['x-a'], vary: ['Origin'],
    }],
    ['credentials and maxAge, configured methods and headers', {
      origins: [listed, 'https://b.example'], credentials: true, maxAge: 600, methods: ['GET', 'PUT'], headers: ['content-type', 'x-b'],
    }, listed, 'x-other', {
      'access-control-allow-origin': [listed], 'access-control-allow-methods': ['GET, PUT'],
      'access-control-allow-headers': ['content-type, x-b'], 'access-control-max-age': ['600'],
      'access-control-allow-credentials': ['true'], vary: ['Origin'],
    }],
    ['wildcard echoes the origin', { origins: ['*'], credentials: false }, 'https://any.example', undefined, {
      'access-control-allow-origin': ['https://any.example'], 'access-control-allow-methods': ['GET, HEAD, POST, PUT, DELETE, PATCH'],
      vary: ['Origin'],
    }],
  ])('preflight allowed: %s', (_, cfg, origin, reqHeaders, expected) => {
    const r = read(compileCors(cfg).preflight(origin, reqHeaders, 'rid', false));
    expect(r.statusLine).toBe('HTTP/1.1 204 No Content');
    expect(r.body).toBe('');
    expect(r.fields.get('x-request-id')).toEqual(['rid']);
    r.fields.delete('x-request-id');
    expect(Object.fromEntries(r.fields)).toEqual(expected);
  });

  test('preflight methods default to the route match.methods', () => {
    const r = read(compileCors({ origins: [listed], credentials: false }, ['GET', 'POST']).preflight(listed, undefined, 'r', true));
    expect(r.fields.get('access-control-allow-methods')).toEqual(['GET, POST']);
    expect(r.fields.get('connection')).toEqual(['close']);
  });

  test('preflight from an origin not listed: 403 forbidden without Allow-Origin', () => {
    const r = read(compileCors({ origins: [listed], credentials: true }).preflight('https://evil.example', 'x', 'rid', false));
    expect(r.statusLine).toBe('HTTP/1.1 403 Forbidden');
    expect(JSON.parse(r.body)).toEqual({ error: 'forbidden', requestId: 'rid' });
    expect([...r.fields.keys()].filter((k) => k.startsWith('access-control-'))).toEqual([]);
  });

  test('simple requests: fields only for a listed origin', () => {
    const cors = compileCors({ origins: ['HTTPS://App.Example'], credentials: false, exposeHeaders: ['x-total'] });
    const out: string[] = [];
    expect(cors.addResponseHeaders('https://evil.example', out)).toBe(false);
    expect(out).toEqual([]);
    expect(cors.addResponseHeaders(listed, out)).toBe(true);
    expect(out).toEqual(['access-control-allow-origin', listed, 'access-control-expose-headers', 'x-total', 'vary', 'Origin']);
  });
});
