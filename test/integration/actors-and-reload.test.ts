import path from 'node:path';
import { writeFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { Daemon, ROOT, tempDir, until } from '../helpers/daemon.ts';
import { connect, roundTrip, startEchoServer } from '../helpers/net.ts';

const INDEX = path.join(ROOT, 'src/index.ts');

/** Counts connection.closed events and logs each count; throws at start when `options.fail` is set. */
const COUNTER = `import { defineActor, fromCallback } from '${INDEX}';
export default defineActor<{ fail?: boolean }>({
  name: 'closed-counter',
  logic: (ctx) => {
    if (ctx.options.fail) throw new Error('bad options');
    return fromCallback(() => {
      let closed = 0;
      const sub = ctx.events$.subscribe((e) => {
        if (e.type === 'connection.closed') ctx.log.info({ closed: ++closed }, 'counted');
      });
      ctx.log.info('counter up');
      return () => sub.unsubscribe();
    });
  },
});
`;

/** Crashes right after every start. */
const CRASHER = `import { defineActor, fromPromise } from '${INDEX}';
export default defineActor({ name: 'crasher', logic: () => fromPromise(async () => { await Promise.resolve(); throw new Error('crash loop'); }) });
`;

function config(echo: number, actors: string, extra = ''): string {
  return `admin: { listen: "127.0.0.1:0"${extra} }
runtime: { workers: 2, shutdownTimeout: 5s }
upstreams: [ { name: app, backends: [ "127.0.0.1:${echo}" ] } ]
listeners: [ { name: tcp-in, protocol: tcp, listen: "127.0.0.1:0", upstream: app } ]
actors: [ ${actors} ]
`;
}

/** The config with a second listener on a port another server holds: its bind fails the reload. */
function withBusyListener(text: string, port: number): string {
  return text.replace(/^listeners: .*$/m, `listeners: [ { name: tcp-in, protocol: tcp, listen: "127.0.0.1:0", upstream: app }, { name: busy, protocol: tcp, listen: "127.0.0.1:${port}", upstream: app } ]`);
}

/** The report of the actors supervisor when one custom actor gives up on its own intensity. */
const gaveUp = (id: string) => (l: { msg: string; [k: string]: unknown }) => l.msg === 'supervisor report' && l.errorContext === 'child_gave_up' && l.offender === id;

describe('custom actors and reload', () => {
  test('a custom actor sees connection events from every shard without debug mode', async () => {
    await using echo = await startEchoServer();
    using dir = tempDir();
    const mod = dir.write('counter.ts', COUNTER);
    await using gh = await Daemon.start(dir.write('gh.yaml', config(echo.port, `{ name: counter, module: ${mod} }`)));
    await gh.waitForLog((l) => l.msg === 'counter up');
    for (let i = 0; i < 8; i++) expect(await roundTrip(gh.port('tcp-in'), `c${i}`)).toBe(`c${i}`);
    await gh.waitForLog((l) => l.msg === 'counted' && l.closed === 8);
    expect(await gh.stop()).toBe(0);
  });

  test('a reload that fails after its actors changed (a listener cannot bind) is rolled back: the old actor and config stay', async () => {
    await using echo = await startEchoServer();
    using dir = tempDir();
    const mod = dir.write('counter.ts', COUNTER);
    const file = dir.write('gh.yaml', config(echo.port, `{ name: counter, module: ${mod} }`));
    await using gh = await Daemon.start(file);
    await gh.waitForLog((l) => l.msg === 'counter up');
    // The echo server holds its port (no reusePort): a listener there cannot bind.
    writeFileSync(file, withBusyListener(config(echo.port, `{ name: counter, module: ${mod}, options: { changed: true } }`), echo.port));
    const res = await gh.admin('/reload', { method: 'POST' });
    expect(res.status).toBe(400);
    // The previous incarnation is back, with the previous options.
    await until(() => gh.logs.filter((l) => l.msg === 'counter up').length === 3, 10_000, 'old counter restarted');
    const cfg = await gh.json<{ actors: { options: Record<string, unknown> }[] }>('/config');
    expect(cfg.actors[0]!.options).toEqual({});
    const tree = await gh.json<{ children: { id: string; children: { id: string; status: string }[] }[] }>('/actors');
    expect(tree.children.find((c) => c.id === 'actors')!.children).toMatchObject([{ id: 'actor:counter', status: 'running' }]);
    expect(await roundTrip(gh.port('tcp-in'), 'ok')).toBe('ok');
    expect(await gh.stop()).toBe(0);
  });

  test('a reloaded admin token applies at once', async () => {
    using dir = tempDir();
    const file = dir.write('gh.yaml', `admin: { listen: "127.0.0.1:0", token: alpha }\nruntime: { workers: 1 }\n`);
    await using gh = await Daemon.start(file);
    const get = (token: string) => gh.admin('/actors?depth=0', { headers: { authorization: `Bearer ${token}` } }).then((r) => r.status);
    expect(await get('alpha')).toBe(200);
    writeFileSync(file, `admin: { listen: "127.0.0.1:0", token: beta }\nruntime: { workers: 1 }\n`);
    const res = await gh.admin('/reload', { method: 'POST', headers: { authorization: 'Bearer alpha' } });
    expect(res.status).toBe(200);
    expect(await get('alpha')).toBe(401);
    expect(await get('beta')).toBe(200);
    expect(await gh.stop()).toBe(0);
  });

  test('a crash-looping custom actor gives up alone, never touching the traffic', async () => {
    await using echo = await startEchoServer();
    using dir = tempDir();
    const mod = dir.write('crasher.ts', CRASHER);
    await using gh = await Daemon.start(dir.write('gh.yaml', config(echo.port, `{ name: crasher, module: ${mod} }`)));
    const open = await connect(gh.port('tcp-in'));
    await gh.waitForLog(gaveUp('actor:crasher'));
    expect(await open.send('still flowing')).toBe('still flowing');
    expect(await roundTrip(gh.port('tcp-in'), 'new')).toBe('new');
    expect((await gh.admin('/readyz')).status).toBe(200);
    await open.close();
    expect(await gh.stop()).toBe(0);
  });

  test('rollback also stops an actor the failed reload had already added', async () => {
    await using echo = await startEchoServer();
    using dir = tempDir();
    const mod = dir.write('counter.ts', COUNTER);
    const file = dir.write('gh.yaml', config(echo.port, `{ name: a, module: ${mod} }`));
    await using gh = await Daemon.start(file);
    // `b` and `c` start fine, then a listener cannot bind: both must be gone afterwards.
    writeFileSync(file, withBusyListener(config(echo.port, `{ name: a, module: ${mod} }, { name: b, module: ${mod} }, { name: c, module: ${mod} }`), echo.port));
    expect((await gh.admin('/reload', { method: 'POST' })).status).toBe(400);
    const ids = async () =>
      (await gh.json<{ children: { id: string; children: { id: string }[] }[] }>('/actors')).children.find((c) => c.id === 'actors')!.children.map((c) => c.id);
    expect(await ids()).toEqual(['actor:a']);
    // A later good reload that adds `b` works (no duplicate child left behind).
    writeFileSync(file, config(echo.port, `{ name: a, module: ${mod} }, { name: b, module: ${mod} }`));
    const ok = await gh.admin('/reload', { method: 'POST' });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ added: ['actor:b'], removed: [], changed: [], restartRequired: [] });
    expect(await ids()).toEqual(['actor:a', 'actor:b']);
    expect(await gh.stop()).toBe(0);
  });

  test('a reload runs an edited actor module, and brings back an actor that gave up', async () => {
    await using echo = await startEchoServer();
    using dir = tempDir();
    const mod = dir.write('crasher.ts', CRASHER);
    const file = dir.write('gh.yaml', config(echo.port, `{ name: x, module: ${mod} }`));
    await using gh = await Daemon.start(file);
    await gh.waitForLog(gaveUp('actor:x'));
    // Fix the code, not the config: the reload sees the file changed.
    writeFileSync(mod, COUNTER);
    expect((await gh.admin('/reload', { method: 'POST' })).status).toBe(200);
    await gh.waitForLog((l) => l.msg === 'counter up');
    const tree = await gh.json<{ children: { id: string; status: string; children: { id: string }[] }[] }>('/actors');
    expect(tree.children.find((c) => c.id === 'actors')).toMatchObject({ status: 'running', children: [{ id: 'actor:x' }] });
    expect(await gh.stop()).toBe(0);
  });
});
