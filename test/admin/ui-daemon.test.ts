/**
 * Against a real daemon started from the CLI in debug mode (`runtime.debug: true`, log level
 * info): `gatehouse top` run as a child process, and what an open debug UI tab costs in log lines.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Daemon, runCli, tempDir, until } from '../helpers/daemon.ts';
import { startKillableEcho } from '../helpers/backends.ts';
import { connect } from '../helpers/net.ts';

const ADMIN_TOKEN = 'ui-daemon-admin-token-0123456789';

interface Node {
  id: string;
  peer?: string;
  children: Node[];
}
const walk = (n: Node): Node[] => [n, ...n.children.flatMap(walk)];

describe('gatehouse top, and the UI\'s polling, against a daemon', () => {
  const stack = new AsyncDisposableStack();
  let daemon: Daemon;
  const auth = { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } };

  beforeAll(async () => {
    const backend = stack.use(await startKillableEcho());
    const dir = stack.use(tempDir());
    const file = dir.write(
      'gatehouse.yaml',
      `admin: { listen: "127.0.0.1:0", token: ${ADMIN_TOKEN} }
runtime: { workers: 1, shutdownTimeout: 2s, debug: true }
log: { level: info }
upstreams:
  - name: app
    backends: [ ${backend.address} ]
    healthCheck: { type: tcp, interval: 100ms, timeout: 100ms }
listeners:
  - name: tcp-in
    protocol: tcp
    listen: 127.0.0.1:0
    upstream: app
`,
    );
    daemon = stack.use(await Daemon.start(file));
  });

  afterAll(async () => {
    await stack.disposeAsync();
  });

  async function client(): Promise<Awaited<ReturnType<typeof connect>> & { id: string; peer: string }> {
    const c = await connect(daemon.port('tcp-in'));
    const peer = `127.0.0.1:${c.socket.localPort}`;
    const node = await until(async () => walk(await daemon.json<Node>('/actors', auth)).find((n) => n.peer === peer), 10_000, `${peer} in /actors`);
    return { ...c, id: node!.id, peer };
  }

  test('gatehouse top --by bytes prints the busy connection first, with its peer', async () => {
    const busy = await client();
    const idle = await client();
    let pumping = true;
    const pump = (async () => {
      const chunk = 'z'.repeat(16_384);
      while (pumping) await busy.send(chunk);
    })();
    try {
      await idle.send('hi');
      const r = await runCli(['top', '--admin', daemon.adminUrl, '--token', ADMIN_TOKEN, '--by', 'bytes', '--window', '1s', '--limit', '5']);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const lines = r.stdout.trimEnd().split('\n');
      expect(lines[0]).toMatch(/^top [1-5] actors by bytes over 1s$/);
      expect(lines[1]).toMatch(/^ID +TYPE +BYTES +RATE +IN +OUT +PEER +BACKEND$/);
      expect(lines[2]!.split(/ {2,}/)).toEqual([busy.id, 'connection', expect.stringMatching(/^[\d.]+ (KiB|MiB|GiB)$/), expect.stringMatching(/\/s$/), expect.any(String), expect.any(String), busy.peer, expect.stringMatching(/^127\.0\.0\.1:\d+$/)]);
    } finally {
      pumping = false;
      await pump;
      await busy.close();
      await idle.close();
    }
  });

  test('gatehouse top --by events counts the probes\' state changes', async () => {
    const r = await runCli(['top', '--admin', daemon.adminUrl, '--token', ADMIN_TOKEN, '--by', 'events', '--window', '500ms']);
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^top \d+ actors by events over 0.5s$/);
    expect(lines[1]).toMatch(/^ID +TYPE +EVENTS +STATE$/);
    // A probe every 100 ms goes probing -> waiting: about ten events in half a second.
    const [id, type, events] = lines[2]!.split(/ {2,}/);
    expect([id, type]).toEqual([expect.stringMatching(/^probe:app\//), 'healthProbe']);
    expect(Number(events)).toBeGreaterThanOrEqual(4);
  });

  test('a bad option is exit 2 with the daemon\'s message; a wrong token or no daemon is exit 1', async () => {
    const bad = await runCli(['top', '--admin', daemon.adminUrl, '--token', ADMIN_TOKEN, '--window', '2h']);
    expect([bad.code, bad.stdout, bad.stderr]).toEqual([2, '', 'gatehouse top: window must be a duration from 100ms to 60s (5s, 500ms, 1m)\n']);
    const denied = await runCli(['top', '--admin', daemon.adminUrl, '--token', 'wrong', '--window', '100ms']);
    expect(denied.code).toBe(1);
    expect(denied.stderr).toMatch(/^gatehouse top: http:\/\/127\.0\.0\.1:\d+ answered 401: .*unauthorized/);
    const away = await runCli(['top', '--admin', 'http://127.0.0.1:1', '--window', '100ms']);
    expect(away.code).toBe(1);
    expect(away.stderr).toMatch(/^gatehouse top: cannot reach http:\/\/127\.0\.0\.1:1: /);
  });

  test('an open UI tab, polling every route it uses, adds no log line at info level', async () => {
    const routes = ['/', '/actors?depth=8&limit=50', '/upstreams', '/hub', '/state', '/info', '/metrics', '/actors/top?window=100ms'];
    const before = daemon.logs.length;
    for (let round = 0; round < 3; round++) {
      for (const r of routes) {
        const res = await daemon.admin(r, auth);
        expect(res.status, r).toBe(200);
        await res.arrayBuffer();
      }
      const events = await daemon.admin('/actors/events?exclude=healthProbe', auth);
      expect(events.status).toBe(200);
      await events.body?.cancel();
    }
    // A reload logs a line after the polling: anything the polling logged is before it, in order.
    const r = await daemon.admin('/reload', { method: 'POST', ...auth });
    expect(r.status).toBe(200);
    await r.body?.cancel();
    await daemon.waitForLog((l) => l.msg === 'config reloaded', 10_000);
    const during = daemon.logs.slice(before);
    expect(during.slice(0, during.findIndex((l) => l.msg === 'config reloaded')).map((l) => `${l.level} ${l.msg}`)).toEqual([]);
  });
});

describe('with --debug (log level debug)', () => {
  test('an open UI tab polling its routes logs no admin request line', async () => {
    await using backend = await startKillableEcho();
    using dir = tempDir();
    const file = dir.write(
      'gatehouse.yaml',
      `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 1, shutdownTimeout: 2s }
upstreams: [ { name: app, backends: [ ${backend.address} ] } ]
listeners: [ { name: tcp-in, protocol: tcp, listen: 127.0.0.1:0, upstream: app } ]
`,
    );
    await using gh = await Daemon.start(file, { debug: true });
    for (const r of ['/', '/actors?depth=8&limit=50', '/upstreams', '/hub', '/state', '/info', '/metrics']) {
      const res = await gh.admin(r);
      expect(res.status, r).toBe(200);
      await res.arrayBuffer();
    }
    // A change is logged at debug: it comes after the reads, so they were processed before it.
    const bad = await gh.admin('/nope');
    expect(bad.status).toBe(404);
    await bad.arrayBuffer();
    await gh.waitForLog((l) => l.msg === 'admin request' && (l.req as { path?: string }).path === '/nope');
    expect(gh.logs.filter((l) => l.msg === 'admin request').map((l) => (l.req as { path: string }).path)).toEqual(['/nope']);
  });
});
