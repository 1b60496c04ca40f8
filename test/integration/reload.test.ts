import net from 'node:net';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { Daemon, runCli, tempDir } from '../helpers/daemon.ts';
import { connect, readUntilClosed, roundTrip, startEchoServer } from '../helpers/net.ts';

async function freePort(): Promise<number> {
  const s = net.createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as net.AddressInfo).port;
  s.close();
  await once(s, 'close');
  return port;
}

const base = (echo: number, extra = '') => `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2, shutdownTimeout: 5s }
upstreams: [ { name: app, backends: [ "127.0.0.1:${echo}" ] } ]
listeners:
  - { name: one, protocol: tcp, listen: "127.0.0.1:0", upstream: app }
${extra}`;

describe('reload', () => {
  test('SIGHUP adds a listener on every shard without dropping open connections', async () => {
    await using echo = await startEchoServer();
    using dir = tempDir();
    const file = dir.write('gh.yaml', base(echo.port));
    await using gh = await Daemon.start(file);
    const open = await connect(gh.port('one'));
    expect(await open.send('before')).toBe('before');

    writeFileSync(file, base(echo.port, `  - { name: two, protocol: tcp, listen: "127.0.0.1:0", upstream: app }\n`));
    gh.child.kill('SIGHUP');
    const reloaded = await gh.waitForLog((l) => l.msg === 'config reloaded');
    expect(reloaded.added).toEqual(['listener:two']);
    await gh.waitForLog((l) => l.msg === 'listener ready' && l.listener === 'two');
    // The new listener serves, on both shards (the tree lists it twice), and the old connection lives on.
    const replies = await Promise.all(Array.from({ length: 10 }, (_, i) => roundTrip(gh.port('two'), `two ${i}`)));
    expect(replies).toEqual(Array.from({ length: 10 }, (_, i) => `two ${i}`));
    const tree = await runCli(['tree', '--admin', gh.adminUrl]);
    expect(tree.code).toBe(0);
    expect(tree.stdout.match(/listener:two {2}listener {2}listening/g)).toHaveLength(2);
    expect(await open.send('after')).toBe('after');
    await open.close();
    expect(await gh.stop()).toBe(0);
  });

  test('a bad config is refused with its errors and the running one stays', async () => {
    await using echo = await startEchoServer();
    using dir = tempDir();
    const file = dir.write('gh.yaml', base(echo.port));
    await using gh = await Daemon.start(file);
    writeFileSync(file, base(echo.port, `  - { name: two, protocol: tcp, listen: "127.0.0.1:0", upstream: missing }\n`));

    const res = await gh.admin('/reload', { method: 'POST' });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { errors: string[] };
    expect(body.errors).toEqual([expect.stringMatching(/gh\.yaml:6:\d+ listeners\.1\.upstream: /)]);
    gh.child.kill('SIGHUP');
    const refused = await gh.waitForLog((l) => l.msg === 'reload refused: the running config stays');
    expect(refused.level).toBe(50);
    const cli = await runCli(['reload', '--admin', gh.adminUrl]);
    expect(cli.code).toBe(1);
    expect(cli.stderr).toMatch(/listeners\.1\.upstream/);
    expect(await roundTrip(gh.port('one'), 'still serving')).toBe('still serving');
    const cfg = await gh.json<{ listeners: { name: string }[] }>('/config');
    expect(cfg.listeners.map((l) => l.name)).toEqual(['one']);
    expect(await gh.stop()).toBe(0);
  });

  test('a listener moves to a new address and an upstream to a new backend, dropping nothing', async () => {
    await using oldBackend = await startEchoServer();
    await using newBackend = await startEchoServer();
    let servedByNew = 0;
    newBackend.server.on('connection', () => servedByNew++);
    const [p1, p2] = [await freePort(), await freePort()];
    const cfg = (port: number, backend: number) => `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2, shutdownTimeout: 10s }
upstreams: [ { name: app, healthCheck: { enabled: false }, backends: [ "127.0.0.1:${backend}" ] } ]
listeners: [ { name: one, protocol: tcp, listen: "127.0.0.1:${port}", upstream: app } ]
`;
    using dir = tempDir();
    const file = dir.write('gh.yaml', cfg(p1, oldBackend.port));
    await using gh = await Daemon.start(file);
    const open = await connect(p1);
    expect(await open.send('before')).toBe('before');
    writeFileSync(file, cfg(p2, newBackend.port));
    const res = await gh.admin('/reload', { method: 'POST' });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ changed: expect.arrayContaining(['listener:one', 'upstream:app']) });
    // The new address serves, through the new backend.
    expect(await roundTrip(p2, 'moved')).toBe('moved');
    expect(servedByNew).toBe(1);
    // The open connection on the old address is still served by the old backend.
    expect(await open.send('still here')).toBe('still here');
    // The old address takes no new connections.
    expect(await readUntilClosed(p1, 'x').catch(() => '')).toBe('');
    await open.close();
    expect(await gh.stop()).toBe(0);
  });
});
