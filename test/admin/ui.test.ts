import { expect, test } from 'vitest';
import { startFixture } from './fixture.ts';

test('GET / serves the debug UI, which polls /actors, /upstreams and /hub with the bearer token', async () => {
  await using f = await startFixture();
  const r = await f.request('GET', '/');
  expect(r.status).toBe(200);
  expect(r.headers['content-type']).toBe('text/html; charset=utf-8');
  expect(r.headers['cache-control']).toBe('no-store');
  expect(r.headers['referrer-policy']).toBe('no-referrer');
  expect(r.headers['content-security-policy']).toContain("default-src 'self'");
  expect(r.text).toContain('<title>Gatehouse</title>');
  expect(r.text).toContain("'/actors?'");
  expect(r.text).toContain("getJson('/upstreams')");
  expect(r.text).toContain("getJson('/hub')");
  expect(r.text).toContain('id="hub-section"');
  expect(r.text).toContain("'no hub listeners'");
  expect(r.text).toContain("fetch('/actors/events'");
  expect(r.text).toContain("authorization: 'Bearer '");
});
