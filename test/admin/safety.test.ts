/**
 * Admin API safety against a real daemon started from the CLI: requests with a foreign `Host`
 * (DNS rebinding) or `Origin` (a web page of another site or port) are refused with 403 on every
 * route but /healthz, /readyz and /metrics, with and without a token, and logged; an admin
 * listen address off loopback needs a token. Headers are sent with undici, which lets a test set
 * `Host` and `Origin` as a browser or a rebinding page would.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { request } from 'undici';
import { Daemon, runCli, tempDir, type LogLine } from '../helpers/daemon.ts';
import { foreignRequest } from '../../src/admin/http.ts';

const TOKEN = 'safety-admin-token-0123456789';

const config = (admin: string) => `admin: ${admin}
runtime: { workers: 1, shutdownTimeout: 2s, debug: true }
log: { level: info }
`;

interface Answer {
  status: number;
  body: { error?: { code: string; message: string } } & Record<string, unknown>;
}

/** One request to the daemon's admin address with exactly these headers. */
async function send(d: Daemon, method: string, path: string, headers: Record<string, string> = {}): Promise<Answer> {
  const r = await request(`${d.adminUrl}${path}`, { method: method as 'GET', headers, signal: AbortSignal.timeout(10_000) });
  const text = await r.body.text();
  let body: Answer['body'] = {};
  try {
    body = JSON.parse(text) as Answer['body'];
  } catch {
    // /metrics and / are not JSON.
  }
  return { status: r.statusCode, body };
}

const refusals = (d: Daemon): LogLine[] => d.logs.filter((l) => l.msg === 'admin request refused: foreign host or origin');

describe('admin without a token (debug mode)', () => {
  const stack = new AsyncDisposableStack();
  let d: Daemon;
  let port: string;

  beforeAll(async () => {
    const dir = stack.use(tempDir());
    d = stack.use(await Daemon.start(dir.write('gh.yaml', config('{ listen: "127.0.0.1:0" }'))));
    port = new URL(d.adminUrl).port;
  });
  afterAll(() => stack.disposeAsync());

  test('a rebinding Host is refused with 403 host_not_allowed and logged with the remote address', async () => {
    const r = await send(d, 'POST', '/drain', { host: `evil.example:${port}` });
    expect(r).toEqual({ status: 403, body: { error: { code: 'host_not_allowed', message: 'the Host header must be an IP address, localhost or the admin listen host' } } });
    expect((await send(d, 'GET', '/actors', { host: 'evil.example' })).status).toBe(403);
    expect((await send(d, 'GET', '/', { host: `127.0.0.1.nip.io:${port}` })).status).toBe(403);
    expect(refusals(d)).toContainEqual(expect.objectContaining({
      level: 40, actorType: 'admin', remoteAddress: '127.0.0.1', code: 'host_not_allowed',
      req: { method: 'POST', path: '/drain', host: `evil.example:${port}` },
    }));
    expect((await send(d, 'GET', '/readyz')).status).toBe(200);
    expect(d.logs.some((l) => l.msg === 'drain requested')).toBe(false);
  });

  test('an Origin of another port, another host or null is refused with 403 origin_not_allowed', async () => {
    for (const origin of [`http://127.0.0.1:${Number(port) + 1}`, 'http://127.0.0.1', `http://evil.example:${port}`, 'null', `ftp://127.0.0.1:${port}`]) {
      const r = await send(d, 'POST', '/drain', { origin });
      expect(r.status, origin).toBe(403);
      expect(r.body.error?.code, origin).toBe('origin_not_allowed');
    }
    expect((await send(d, 'POST', '/debug/shards/0/crash', { origin: `http://localhost:${port}` })).status).toBe(403);
    expect(refusals(d)).toContainEqual(expect.objectContaining({ code: 'origin_not_allowed', req: { method: 'POST', path: '/drain', host: `127.0.0.1:${port}`, origin: 'null' } }));
    expect(d.logs.some((l) => l.msg === 'drain requested' || l.msg === 'shard crash injected')).toBe(false);
    expect((await send(d, 'GET', '/readyz')).status).toBe(200);
  });

  test('same origin, no Origin, localhost and IP literals are served', async () => {
    expect((await send(d, 'GET', '/actors?depth=1')).status).toBe(200);
    expect((await send(d, 'GET', '/actors?depth=1', { origin: `http://127.0.0.1:${port}` })).status).toBe(200);
    expect((await send(d, 'GET', '/actors?depth=1', { origin: `https://127.0.0.1:${port}` })).status).toBe(200);
    expect((await send(d, 'GET', '/upstreams', { host: `localhost:${port}`, origin: `http://LOCALHOST:${port}` })).status).toBe(200);
    expect((await send(d, 'GET', '/upstreams', { host: `[::1]:${port}` })).status).toBe(200);
    // Through a port forward the Host names another port: still this machine's address.
    expect((await send(d, 'GET', '/config', { host: 'localhost:8080', origin: 'http://localhost:8080' })).status).toBe(200);
    // A request that passes the check reaches the route: here, a shard that does not exist.
    expect((await send(d, 'POST', '/debug/shards/9/crash', { origin: `http://127.0.0.1:${port}` })).body.error?.code).toBe('no_such_shard');
  });

  test('/healthz, /readyz and /metrics answer whatever the Host and Origin', async () => {
    const foreign = { host: 'evil.example', origin: 'null' };
    expect((await send(d, 'GET', '/healthz', foreign)).status).toBe(200);
    expect((await send(d, 'GET', '/readyz', foreign)).status).toBe(200);
    expect((await send(d, 'GET', '/metrics', { host: 'prometheus-target.svc:9901' })).status).toBe(200);
  });
});

describe('admin with a token', () => {
  const stack = new AsyncDisposableStack();
  let d: Daemon;
  let port: string;
  const bearer = { authorization: `Bearer ${TOKEN}` };

  beforeAll(async () => {
    const dir = stack.use(tempDir());
    d = stack.use(await Daemon.start(dir.write('gh.yaml', config(`{ listen: "127.0.0.1:0", token: ${TOKEN} }`))));
    port = new URL(d.adminUrl).port;
  });
  afterAll(async () => {
    // Stopped here rather than by dispose: its idle check reads the admin API without a token.
    expect(await d.stop()).toBe(0);
    await stack.disposeAsync();
  });

  test('a foreign Host or Origin gets 403 even with the right token; the token still guards the rest', async () => {
    expect((await send(d, 'POST', '/drain', { ...bearer, host: `evil.example:${port}` })).body.error?.code).toBe('host_not_allowed');
    expect((await send(d, 'POST', '/drain', { ...bearer, origin: `http://127.0.0.1:${Number(port) + 1}` })).body.error?.code).toBe('origin_not_allowed');
    // The check comes before authentication: a page learns nothing about the token.
    expect((await send(d, 'GET', '/actors', { origin: 'null' })).status).toBe(403);
    expect((await send(d, 'GET', '/actors', bearer)).status).toBe(200);
    expect((await send(d, 'GET', '/actors', { origin: `http://127.0.0.1:${port}` })).status).toBe(401);
    expect((await send(d, 'GET', '/healthz', { host: 'evil.example' })).status).toBe(200);
    expect((await send(d, 'GET', '/metrics', { host: 'evil.example' })).status).toBe(401);
    expect((await send(d, 'GET', '/metrics', { ...bearer, host: 'evil.example' })).status).toBe(200);
    expect(d.logs.some((l) => l.msg === 'drain requested')).toBe(false);
    expect((await send(d, 'GET', '/readyz')).status).toBe(200);
  });
});

describe('admin.listen off loopback', () => {
  test('gatehouse check and start refuse it without a token, and accept it with one', async () => {
    using dir = tempDir();
    const bad = dir.write('bad.yaml', 'admin:\n  listen: "0.0.0.0:0"\n');
    const check = await runCli(['check', '--config', bad]);
    expect(check.code).toBe(1);
    expect(check.stderr).toContain(`${bad}:2:11 admin.listen: 0.0.0.0:0 is not a loopback address: set admin.token too`);
    const start = await runCli(['start', '--config', bad]);
    expect(start.code).toBe(1);
    expect(start.stderr).toContain(`${bad}:2:11 admin.listen: 0.0.0.0:0 is not a loopback address`);
    const good = dir.write('good.yaml', `admin:\n  listen: "0.0.0.0:0"\n  token: ${TOKEN}\n`);
    expect(await runCli(['check', '--config', good])).toMatchObject({ code: 0 });
  });
});

test('foreignRequest: the configured listen host name is allowed as Host', () => {
  expect(foreignRequest({ host: 'gw1.internal:9901' }, 'gw1.internal')).toBeUndefined();
  expect(foreignRequest({ host: 'GW1.internal:9901', origin: 'https://gw1.internal:9901' }, 'gw1.internal')).toBeUndefined();
  expect(foreignRequest({ host: 'gw2.internal:9901' }, 'gw1.internal')?.code).toBe('host_not_allowed');
  expect(foreignRequest({}, '127.0.0.1')?.code).toBe('host_not_allowed');
  expect(foreignRequest({ host: '127.0.0.1:9901@evil.example' }, '127.0.0.1')?.code).toBe('host_not_allowed');
  expect(foreignRequest({ host: '[::ffff:127.0.0.1]:9901' }, '127.0.0.1')).toBeUndefined();
});
