import net from 'node:net';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { Daemon, tempDir, until } from '../helpers/daemon.ts';
import { connect, roundTrip, startEchoServer } from '../helpers/net.ts';

/** Whether a new TCP connection to `port` is refused (nothing accepting on any shard). */
async function refused(port: number): Promise<boolean> {
  const s = net.connect(port, '127.0.0.1');
  try {
    await once(s, 'connect');
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ECONNREFUSED';
  } finally {
    s.destroy();
  }
}

describe('POST /drain and POST /undrain (workers: 2)', () => {
  test('a drain pauses every listener with open connections served; a restarted shard stays paused; undrain accepts again; SIGTERM still exits 0', async () => {
    await using echo = await startEchoServer();
    using dir = tempDir();
    const file = dir.write(
      'gh.yaml',
      `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2, shutdownTimeout: 2s }
upstreams: [ { name: app, backends: [ "127.0.0.1:${echo.port}" ] } ]
listeners:
  - { name: in, protocol: tcp, listen: "127.0.0.1:0", upstream: app }
`,
    );
    await using gh = await Daemon.start(file, { debug: true });
    const port = gh.port('in');
    const open = await connect(port);
    expect(await open.send('before')).toBe('before');

    expect((await gh.admin('/undrain', { method: 'POST' })).status).toBe(409);
    expect((await gh.admin('/drain', { method: 'POST' })).status).toBe(202);
    expect((await gh.admin('/readyz')).status).toBe(503);
    await until(() => refused(port), 5_000, 'new connections refused on both shards');
    expect(await open.send('during')).toBe('during');

    // A shard that crashes while drained comes back paused.
    expect((await gh.admin('/debug/shards/0/crash', { method: 'POST' })).status).toBe(202);
    const readyBefore = gh.logs.filter((l) => l.msg === 'shard ready' && l.shard === 0).length;
    await until(() => gh.logs.filter((l) => l.msg === 'shard ready' && l.shard === 0).length > readyBefore, 10_000, 'shard 0 restarted');
    for (let i = 0; i < 10; i++) expect(await refused(port)).toBe(true);

    // Undrain: both shards accept again, on the same port; the open connection lived through it all
    // (it was on shard 1, or it went down with the crashed shard 0: then a new one works).
    const r = await gh.admin('/undrain', { method: 'POST' });
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ draining: false });
    const ready = await gh.admin('/readyz');
    expect(ready.status, await ready.text()).toBe(200);
    const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => roundTrip(port, `after ${i}`)));
    expect(replies).toEqual(Array.from({ length: 20 }, (_, i) => `after ${i}`));
    const tree = JSON.stringify(await gh.json('/actors?type=listener'));
    expect(tree.match(/"state":"listening"/g)).toHaveLength(2);
    if (!open.socket.destroyed) await open.close();

    // A drain, then SIGTERM: the stop finishes it.
    expect((await gh.admin('/drain', { method: 'POST' })).status).toBe(202);
    expect(await gh.stop()).toBe(0);
  });
});

describe('runtime.watchConfig', () => {
  test('a changed file is reloaded; a broken one is refused once and the running config stays; a fix reloads', async () => {
    await using echo = await startEchoServer();
    using dir = tempDir();
    const yaml = (extra = '') => `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 1, shutdownTimeout: 2s, watchConfig: true }
upstreams: [ { name: app, backends: [ "127.0.0.1:${echo.port}" ] } ]
listeners:
  - { name: one, protocol: tcp, listen: "127.0.0.1:0", upstream: app }
${extra}`;
    const file = dir.write('gh.yaml', yaml());
    await using gh = await Daemon.start(file);
    await until(() => gh.logs.some((l) => l.msg === 'watching the config file'), 5_000, 'the watcher');

    writeFileSync(file, yaml(`  - { name: two, protocol: tcp, listen: "127.0.0.1:0", upstream: app }\n`));
    const reloaded = await gh.waitForLog((l) => l.msg === 'config reloaded');
    expect(reloaded.added).toEqual(['listener:two']);
    await gh.waitForLog((l) => l.msg === 'listener ready' && l.listener === 'two');
    expect(await roundTrip(gh.port('two'), 'two')).toBe('two');

    writeFileSync(file, yaml(`  - { name: three, protocol: tcp, listen: "127.0.0.1:0", upstream: nowhere }\n`));
    const refusedLine = await gh.waitForLog((l) => l.msg === 'reload refused: the running config stays');
    expect(JSON.stringify(refusedLine.errors)).toContain('nowhere');
    expect(await roundTrip(gh.port('two'), 'still')).toBe('still');

    writeFileSync(file, yaml());
    const again = await gh.waitForLog((l) => l.msg === 'config reloaded' && Array.isArray(l.removed) && (l.removed as string[]).includes('listener:two'));
    expect(again.added).toEqual([]);
    expect(gh.logs.filter((l) => l.msg === 'reload refused: the running config stays')).toHaveLength(1);
  });
});
