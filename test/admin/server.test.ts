import net from 'node:net';
import { once } from 'node:events';
import { describe, expect, test } from 'vitest';
import { startAdminServer } from '../../src/admin/server.ts';
import { sendJson } from '../../src/admin/http.ts';
import pino from 'pino';
import { FakeBackend, startFixture } from './fixture.ts';

describe('admin routes', () => {
  test('GET /healthz answers 200; HEAD answers without a body', async () => {
    await using f = await startFixture();
    const r = await f.request('GET', '/healthz');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(r.json).toEqual({ status: 'ok' });
    const h = await f.request('HEAD', '/healthz');
    expect(h.status).toBe(200);
    expect(h.text).toBe('');
  });

  test('GET /readyz is 200 when ready and 503 with the detail otherwise', async () => {
    await using f = await startFixture();
    expect((await f.request('GET', '/readyz')).json).toEqual({ ready: true });
    f.backend.isReady = false;
    const r = await f.request('GET', '/readyz');
    expect(r.status).toBe(503);
    expect(r.json).toEqual({
      error: { code: 'not_ready', message: 'not ready' },
      ready: false,
      detail: { starting: ['listener:web'] },
    });
  });

  test('GET /actors passes depth, limit and type to the backend and returns the tree', async () => {
    await using f = await startFixture();
    const r = await f.request('GET', '/actors?depth=2&limit=50&type=connection');
    expect(r.status).toBe(200);
    expect(r.json).toEqual(f.backend.treeRoot);
    expect(f.backend.treeCalls).toEqual([{ depth: 2, limit: 50, type: 'connection' }]);
    await f.request('GET', '/actors');
    expect(f.backend.treeCalls[1]).toEqual({});
  });

  test.each([
    ['depth=abc', 'depth'],
    ['depth=-1', 'depth'],
    ['depth=', 'depth'],
    ['depth=1.5', 'depth'],
    ['depth=1e3', 'depth'],
    ['depth=99999', 'depth'],
    ['depth=1&depth=2', 'depth'],
    ['limit=ten', 'limit'],
    ['limit=0x10', 'limit'],
    ['type=', 'type'],
    [`type=${'x'.repeat(201)}`, 'type'],
  ])('GET /actors?%s answers 400 bad_query', async (q, param) => {
    await using f = await startFixture();
    const r = await f.request('GET', `/actors?${q}`);
    expect(r.status).toBe(400);
    expect(r.json.error.code).toBe('bad_query');
    expect(r.json.param).toBe(param);
    expect(f.backend.treeCalls).toEqual([]);
  });

  test('a backend failure answers 500 internal and is logged, and the server keeps serving', async () => {
    await using f = await startFixture();
    f.backend.treeError = new Error('boom');
    const r = await f.request('GET', '/actors');
    expect(r.status).toBe(500);
    expect(r.json).toEqual({ error: { code: 'internal', message: 'internal error' } });
    expect(f.logs).toContainEqual(expect.objectContaining({ actorType: 'admin', msg: 'admin request failed', err: expect.objectContaining({ message: 'boom' }) }));
    expect((await f.request('GET', '/healthz')).status).toBe(200);
  });

  test('GET /upstreams and GET /config return the backend views', async () => {
    await using f = await startFixture();
    const u = await f.request('GET', '/upstreams');
    expect(u.status).toBe(200);
    expect(u.json).toEqual(f.backend.view);
    const c = await f.request('GET', '/config');
    expect(c.status).toBe(200);
    expect(c.json).toEqual(f.backend.effectiveConfig);
  });

  test('POST /reload answers 200 with the diff, 400 with the errors, 500 when reload throws', async () => {
    await using f = await startFixture();
    const ok = await f.request('POST', '/reload');
    expect(ok.status).toBe(200);
    expect(ok.json).toEqual({ added: ['listener:b'], removed: [], changed: ['upstream:app'], restartRequired: [] });

    f.backend.reloadResult = { ok: false, errors: ['cfg.yaml:3:9 listeners.0.listen: bad address'] };
    const bad = await f.request('POST', '/reload');
    expect(bad.status).toBe(400);
    expect(bad.json.error.code).toBe('config_invalid');
    expect(bad.json.errors).toEqual(['cfg.yaml:3:9 listeners.0.listen: bad address']);

    f.backend.reloadResult = new Error('disk gone');
    expect((await f.request('POST', '/reload')).status).toBe(500);
  });

  test('POST /drain answers 202 and drains', async () => {
    await using f = await startFixture();
    const r = await f.request('POST', '/drain');
    expect(r.status).toBe(202);
    expect(r.json).toEqual({ draining: true });
    expect(f.backend.drained).toBe(1);
  });

  test('POST /debug/shards/:n/crash is 404 outside debug mode', async () => {
    await using f = await startFixture();
    const r = await f.request('POST', '/debug/shards/0/crash');
    expect(r.status).toBe(404);
    expect(r.json.error.code).toBe('debug_disabled');
    expect(r.json.error.message).toContain('--debug');
    expect(f.backend.crashed).toEqual([]);
  });

  test('POST /debug/shards/:n/crash crashes the shard in debug mode; 404 for no such shard', async () => {
    await using f = await startFixture({ debug: true });
    const r = await f.request('POST', '/debug/shards/1/crash');
    expect(r.status).toBe(202);
    expect(r.json).toEqual({ shard: 1, crashed: true });
    expect(f.backend.crashed).toEqual([1]);
    for (const n of ['7', 'x', '-1', '%zz']) {
      const miss = await f.request('POST', `/debug/shards/${n}/crash`);
      expect(miss.status).toBe(404);
      expect(miss.json.error.code).toMatch(/^(no_such_shard|not_found)$/);
    }
    const get = await f.request('GET', '/debug/shards/1/crash');
    expect(get.status).toBe(405);
    expect(get.headers.allow).toBe('POST');
  });

  test('POST /debug/actors/:id/crash crashes a control-plane actor by its URL-encoded id, in debug mode only', async () => {
    const id = encodeURIComponent('probe:app/127.0.0.1:9001');
    {
      await using f = await startFixture();
      const r = await f.request('POST', `/debug/actors/${id}/crash`);
      expect(r.status).toBe(404);
      expect(r.json.error.code).toBe('debug_disabled');
      expect(f.backend.crashedActors).toEqual([]);
    }
    await using f = await startFixture({ debug: true });
    const r = await f.request('POST', `/debug/actors/${id}/crash`);
    expect(r.status).toBe(202);
    expect(r.json).toEqual({ actor: 'probe:app/127.0.0.1:9001', crashed: true });
    expect(f.backend.crashedActors).toEqual(['probe:app/127.0.0.1:9001']);
    const miss = await f.request('POST', `/debug/actors/${encodeURIComponent('probe:nope')}/crash`);
    expect(miss.status).toBe(404);
    expect(miss.json.error.code).toBe('no_such_actor');
  });

  test('unknown routes answer 404 and wrong methods 405 with Allow', async () => {
    await using f = await startFixture();
    const nf = await f.request('GET', '/nope');
    expect(nf.status).toBe(404);
    expect(nf.json).toEqual({ error: { code: 'not_found', message: 'no such route' } });
    expect((await f.request('GET', '/actors/')).status).toBe(404);

    const m = await f.request('GET', '/reload');
    expect(m.status).toBe(405);
    expect(m.headers.allow).toBe('POST');
    expect(m.json.error.code).toBe('method_not_allowed');
    const d = await f.request('DELETE', '/healthz');
    expect(d.status).toBe(405);
    expect(d.headers.allow).toBe('GET, HEAD');
  });

  test('a malformed request gets a 400 JSON answer and does not stop the server', async () => {
    await using f = await startFixture();
    const sock = net.connect(f.server.address.port, '127.0.0.1');
    sock.setEncoding('utf8');
    let got = '';
    sock.on('data', (c: string) => (got += c));
    sock.write('GARBAGE\r\n\r\n');
    await once(sock, 'close', { signal: AbortSignal.timeout(2_000) });
    expect(got).toMatch(/^HTTP\/1\.1 400 /);
    expect(got).toContain('"code":"bad_request"');
    expect((await f.request('GET', '/healthz')).status).toBe(200);
  });

  test('extra routes are mounted with their parameters', async () => {
    await using f = await startFixture({
      routes: [{ path: '/v1/services/:id', methods: { GET: ({ res, params }) => sendJson(res, 200, { id: params.id }) } }],
    });
    const r = await f.request('GET', '/v1/services/a%20b');
    expect(r.json).toEqual({ id: 'a b' });
  });
});

describe('admin server lifecycle', () => {
  test('close() is idempotent and closes kept-alive connections', async () => {
    await using f = await startFixture();
    // The fixture's undici client keeps its connection open after this answer.
    expect((await f.request('GET', '/healthz')).status).toBe(200);
    const a = f.server.close();
    const b = f.server.close();
    await Promise.all([a, b]);
    expect(f.server.status).toBe('closed');
    await f.server.close();
    await f.server.destroy();
  });

  test('a port in use fails with GH_ERR_LISTEN', async () => {
    await using f = await startFixture();
    const log = pino({ level: 'silent' });
    const err = await startAdminServer({ host: '127.0.0.1', port: f.server.address.port, backend: new FakeBackend(), log }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'GH_ERR_LISTEN' });
  });
});
