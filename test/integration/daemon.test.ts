import net from 'node:net';
import { once } from 'node:events';
import { describe, expect, test } from 'vitest';
import { Daemon, metric, runCli, tempDir, until } from '../helpers/daemon.ts';
import { connect, roundTrip, startEchoServer } from '../helpers/net.ts';

const config = (backends: number[], extra = '', workers = 2) => `
admin: { listen: "127.0.0.1:0" }
runtime: { workers: ${workers}, shutdownTimeout: 5s }
log: { level: info }
upstreams:
  - name: app
    connectTimeout: 1s
    backends: [ ${backends.map((p) => `{ address: "127.0.0.1:${p}" }`).join(', ')} ]
listeners:
  - name: tcp-in
    protocol: tcp
    listen: "127.0.0.1:0"
    upstream: app
${extra}`;

describe('the daemon from the CLI', () => {
  test('proxies TCP through its worker-thread shards and forwards half-close', async () => {
    await using a = await startEchoServer();
    await using b = await startEchoServer();
    using dir = tempDir();
    await using gh = await Daemon.start(dir.write('gh.yaml', config([a.port, b.port])));
    const port = gh.port('tcp-in');
    // The client half-closes after writing: the echo still comes back in full, then the FIN.
    const payload = 'x'.repeat(256 * 1024);
    expect(await roundTrip(port, payload)).toBe(payload);
    const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => roundTrip(port, `hello ${i}`)));
    expect(replies).toEqual(Array.from({ length: 20 }, (_, i) => `hello ${i}`));
    // Both backends served (round robin), and both shards are up.
    expect(a.server.listening && b.server.listening).toBe(true);
    const m = await (await gh.admin('/metrics')).text();
    expect(metric(m, 'gatehouse_shard_up', { shard: '0' })).toBe(1);
    expect(metric(m, 'gatehouse_shard_up', { shard: '1' })).toBe(1);
    expect(metric(m, 'gatehouse_connections_total', { listener: 'tcp-in', outcome: 'ok' })).toBe(21);
    expect(metric(m, 'gatehouse_bytes_total', { listener: 'tcp-in', direction: 'in' })).toBeGreaterThanOrEqual(payload.length);
    expect(await gh.stop()).toBe(0);
  });

  test('the backend half-closes first: the client still sends, and gets everything', async () => {
    // A backend that sends a greeting and FIN at once, then reads until the client's FIN.
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      s.end('greeting\n');
      let got = 0;
      s.on('data', (d) => (got += d.length));
      s.on('end', () => s.destroy());
      s.on('close', () => server.emit('received', got));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    using dir = tempDir();
    await using gh = await Daemon.start(dir.write('gh.yaml', config([(server.address() as net.AddressInfo).port], '', 1)));
    const c = net.connect({ port: gh.port('tcp-in'), host: '127.0.0.1', allowHalfOpen: true });
    let text = '';
    c.on('data', (d) => (text += d));
    await once(c, 'end');
    expect(text).toBe('greeting\n');
    const received = once(server, 'received');
    c.end('y'.repeat(100_000));
    expect((await received)[0]).toBe(100_000);
    c.destroy();
    server.close();
    await once(server, 'close');
    expect(await gh.stop()).toBe(0);
  });

  test('gatehouse check prints FILE:LINE:COL key.path for every error and exits 1', async () => {
    using dir = tempDir();
    const bad = dir.write(
      'bad.yaml',
      `runtime:
  workers: -1
listeners:
  - name: tcp-in
    protocol: tcp
    listen: "127.0.0.1:99999"
    upstream: nowhere
`,
    );
    const r = await runCli(['check', '--config', bad]);
    expect(r.code).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toEqual(
      expect.arrayContaining([
        expect.stringMatching(new RegExp(`^${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:2:12 runtime\\.workers: `)),
        expect.stringMatching(/:6:13 listeners\.0\.listen: /),
        expect.stringMatching(/:7:15 listeners\.0\.upstream: /),
      ]),
    );
    const good = await runCli(['check', '--config', 'examples/quickstart.yaml']);
    expect(good.code).toBe(0);
  });

  test('SIGTERM drains: no new connections, /readyz 503, open connections served, exit 0', async () => {
    await using echo = await startEchoServer();
    using dir = tempDir();
    await using gh = await Daemon.start(dir.write('gh.yaml', config([echo.port])));
    const port = gh.port('tcp-in');
    const slow = await connect(port);
    expect(await slow.send('before')).toBe('before');
    expect((await gh.admin('/readyz')).status).toBe(200);
    gh.child.kill('SIGTERM');
    await gh.waitForLog((l) => l.msg === 'shard draining');
    expect((await gh.admin('/readyz')).status).toBe(503);
    await until(
      () =>
        new Promise<boolean>((resolve) => {
          const c = net.connect(port, '127.0.0.1');
          c.on('connect', () => {
            c.destroy();
            resolve(false);
          });
          c.on('error', () => resolve(true));
        }),
      10_000,
      'listener closed',
    );
    // The open connection is still served while the daemon drains.
    expect(await slow.send('during drain')).toBe('during drain');
    await slow.close();
    expect(await gh.exited).toBe(0);
    expect(gh.logs.some((l) => l.msg === 'gatehouse stopped')).toBe(true);
  });

  test('SIGINT with a connection that never ends: closed at shutdownTimeout, exit 0', async () => {
    await using echo = await startEchoServer();
    using dir = tempDir();
    const cfg = config([echo.port]).replace('shutdownTimeout: 5s', 'shutdownTimeout: 1s');
    await using gh = await Daemon.start(dir.write('gh.yaml', cfg));
    const idle = await connect(gh.port('tcp-in'));
    expect(await idle.send('hold')).toBe('hold');
    const ended = new Promise<void>((r) => idle.socket.once('end', r));
    gh.child.kill('SIGINT');
    await gh.waitForLog((l) => l.msg === 'drain deadline reached, closing connections');
    await ended;
    expect(await gh.exited).toBe(0);
    await idle.close();
  });

  test('after 10,000 connect/close cycles every registry and gauge is back to zero', async () => {
    await using echo = await startEchoServer();
    using dir = tempDir();
    await using gh = await Daemon.start(dir.write('gh.yaml', config([echo.port])));
    const port = gh.port('tcp-in');
    const total = 10_000;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < total) {
        next++;
        const c = net.connect({ port, host: '127.0.0.1' });
        c.on('error', () => {});
        await once(c, 'connect');
        c.end();
        await once(c, 'close');
      }
    };
    await Promise.all(Array.from({ length: 32 }, worker));
    const m = await until<string | undefined>(async () => {
      const text = await (await gh.admin('/metrics')).text();
      const done = metric(text, 'gatehouse_connections_total', { listener: 'tcp-in', outcome: 'ok' }) ?? 0;
      return done >= total && metric(text, 'gatehouse_connections_active', { listener: 'tcp-in' }) === 0 ? text : undefined;
    }, 20_000, 'all connections closed');
    expect(metric(m!, 'gatehouse_actors', { type: 'connection' }) ?? 0).toBe(0);
    const tree = await gh.json<{ children: { id: string; children: unknown[] }[] }>('/actors');
    const listeners: { registry: Record<string, number> }[] = [];
    const walk = (n: { type?: string; children?: unknown[] } & Record<string, unknown>): void => {
      if (n.type === 'listener') listeners.push(n as never);
      for (const c of n.children ?? []) walk(c as never);
    };
    walk(tree as never);
    expect(listeners).toHaveLength(2);
    for (const l of listeners) expect(l.registry).toEqual({ byId: 0 });
    expect(await gh.stop()).toBe(0);
  }, 60_000);
});
