import { describe, expect, test } from 'vitest';
import { startFixture } from './fixture.ts';

const TOKEN = 's3cret-admin-token';
const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

describe('admin auth with a token', () => {
  test('/healthz and /readyz need no token', async () => {
    await using f = await startFixture({ token: TOKEN });
    expect((await f.request('GET', '/healthz')).status).toBe(200);
    expect((await f.request('GET', '/readyz')).status).toBe(200);
  });

  test.each([
    ['GET', '/metrics'],
    ['GET', '/actors'],
    ['GET', '/upstreams'],
    ['GET', '/config'],
    ['POST', '/reload'],
    ['POST', '/drain'],
    ['GET', '/'],
    ['GET', '/no-such-route'],
  ])('%s %s without a token answers 401 with WWW-Authenticate', async (method, path) => {
    await using f = await startFixture({ token: TOKEN });
    const r = await f.request(method, path);
    expect(r.status).toBe(401);
    expect(r.headers['www-authenticate']).toBe('Bearer realm="gatehouse-admin"');
    expect(r.json).toEqual({ error: { code: 'unauthorized', message: 'a valid bearer token is required' } });
    expect(f.backend.drained).toBe(0);
  });

  test.each([['wrong'], [TOKEN.slice(0, -1)], [`${TOKEN}x`], ['']])('a wrong token %j answers 401 invalid_token', async (t) => {
    await using f = await startFixture({ token: TOKEN });
    const r = await f.request('GET', '/upstreams', bearer(t));
    expect(r.status).toBe(401);
    expect(r.headers['www-authenticate']).toContain('error="invalid_token"');
  });

  test('the right token is accepted, case-insensitive scheme', async () => {
    await using f = await startFixture({ token: TOKEN });
    expect((await f.request('GET', '/upstreams', bearer(TOKEN))).status).toBe(200);
    expect((await f.request('GET', '/metrics', { authorization: `bearer ${TOKEN}` })).status).toBe(200);
    expect((await f.request('POST', '/drain', bearer(TOKEN))).status).toBe(202);
    expect((await f.request('GET', '/nope', bearer(TOKEN))).status).toBe(404);
  });

  test('?token= is accepted for GET / only, and never logged', async () => {
    await using f = await startFixture({ token: TOKEN });
    const page = await f.request('GET', `/?token=${TOKEN}`);
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
    expect((await f.request('GET', '/?token=wrong')).status).toBe(401);
    expect((await f.request('GET', `/actors?token=${TOKEN}`)).status).toBe(401);
    expect((await f.request('GET', `/metrics?token=${TOKEN}`)).status).toBe(401);
    expect(JSON.stringify(f.logs)).not.toContain(TOKEN);
  });
});

describe('admin without a token', () => {
  test('every route is open', async () => {
    await using f = await startFixture();
    expect((await f.request('GET', '/metrics')).status).toBe(200);
    expect((await f.request('GET', '/')).status).toBe(200);
  });
});

describe('admin off loopback', () => {
  test('without a token (a reload removed it), every route but /healthz and /readyz answers 401', async () => {
    let token: string | undefined = TOKEN;
    await using f = await startFixture({ host: '0.0.0.0', token: () => token });
    expect((await f.request('GET', '/upstreams', bearer(TOKEN))).status).toBe(200);
    token = undefined;
    const r = await f.request('POST', '/drain');
    expect(r.status).toBe(401);
    expect(r.json).toEqual({ error: { code: 'unauthorized', message: 'admin.token is required while the admin API listens off loopback' } });
    expect((await f.request('GET', '/metrics')).status).toBe(401);
    expect((await f.request('GET', '/healthz')).status).toBe(200);
    expect((await f.request('GET', '/readyz')).status).toBe(200);
    expect(f.backend.drained).toBe(0);
  });
});
