import net from 'node:net';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { Daemon, ROOT, metric, runCli, tempDir, until } from '../helpers/daemon.ts';
import { connect } from '../helpers/net.ts';
import { WebSocket } from 'ws';

/** Free ports for configs that must name fixed ports (the demo backends). */
async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, async () => {
      const s = net.createServer().listen(0, '127.0.0.1');
      await once(s, 'listening');
      return s;
    }),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

async function httpGet(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(5_000) });
  return res.text();
}

describe('custom actors', () => {
  test('the quickstart serves through its listener and its hub (a token from gatehouse token), and gatehouse tree shows the whole tree', async () => {
    const [a, b, listen, hub, node] = await freePorts(5);
    using dir = tempDir();
    // The quickstart as shipped, with free ports, its actor modules resolved from examples/.
    const text = readFileSync(path.join(ROOT, 'examples/quickstart.yaml'), 'utf8')
      .replaceAll('127.0.0.1:9901', '127.0.0.1:0')
      .replaceAll('9001', String(a))
      .replaceAll('9002', String(b))
      .replaceAll('127.0.0.1:15000', `127.0.0.1:${listen}`)
      .replaceAll('127.0.0.1:18090', `127.0.0.1:${hub}`)
      .replaceAll('7001', String(node))
      .replaceAll('./actors/', `${path.join(ROOT, 'examples/actors')}/`);
    await using gh = await Daemon.start(dir.write('quickstart.yaml', text));
    await gh.waitForLog((l) => l.msg === 'demo backend listening' && l.port === b);
    const answers = await Promise.all(Array.from({ length: 6 }, () => httpGet(listen!)));
    expect(answers.every((t) => /^hello from [ab] \(request \d+, GET \/\)\n$/.test(t))).toBe(true);
    expect(new Set(answers.map((t) => t.slice(0, 12)))).toEqual(new Set(['hello from a', 'hello from b']));

    // The hub, as the README shows it: a token from the CLI, a request answered by the demo node.
    const file = dir.write('quickstart.yaml', text);
    const minted = await runCli(['token', '--config', file, '--sub', 'alice']);
    expect(minted.code).toBe(0);
    await gh.waitForLog((l) => l.msg === 'demo node: gateway connected');
    const ws = new WebSocket(`ws://127.0.0.1:${hub}/connect?token=${minted.stdout.trim()}`);
    const frames: { type: string; id?: string; data?: unknown }[] = [];
    ws.on('message', (d: Buffer) => frames.push(JSON.parse(d.toString())));
    await once(ws, 'open');
    await until(() => frames.find((f) => f.type === 'welcome'), 5_000, 'welcome');
    ws.send(JSON.stringify({ type: 'request', id: 'r1', data: 'hi' }));
    expect(await until(() => frames.find((f) => f.type === 'response'), 5_000, 'response')).toEqual({ type: 'response', id: 'r1', data: { echo: 'hi', node: 'n1' } });
    ws.close();
    await once(ws, 'close');
    expect((await runCli(['token', '--config', file, '--sub', 'x', '--listener', 'nope'])).code).toBe(1);

    const tree = await runCli(['tree', '--admin', gh.adminUrl]);
    expect(tree.code).toBe(0);
    for (const line of [
      /^root {2}supervisor {2}running$/m,
      /admin {2}admin {2}serving/,
      /actor:demo-a {2}demo-http-backend {2}serving/,
      /actor:demo-b {2}demo-http-backend {2}serving/,
      /shard-0 {2}shard {2}running/,
      /shard-1 {2}shard {2}running/,
      /listener:tcp-in {2}listener {2}listening/,
      /listener:hub {2}listener {2}listening/,
      /node:hub\/n1 {2}node-stream {2}ready/,
      /presence:hub {2}presence/,
    ]) {
      expect(tree.stdout).toMatch(line);
    }
    // The type filter works across shards: the listeners' paths from the root are kept.
    const listeners = await gh.json<{ children: { id: string; children: { children: { children: { id: string; type: string }[] }[] }[] }[] }>('/actors?type=listener');
    expect(listeners.children.map((c) => c.id)).toEqual(['shards']);
    const found = listeners.children[0]!.children.flatMap((s) => s.children.flatMap((sup) => sup.children));
    expect(found.map((l) => `${l.type}:${l.id}`)).toEqual(['listener:listener:tcp-in', 'listener:listener:hub', 'listener:listener:tcp-in', 'listener:listener:hub']);
    const depth1 = await runCli(['tree', '--admin', gh.adminUrl, '--depth', '1']);
    expect(depth1.stdout).not.toMatch(/shard-0/);
    expect(await gh.stop()).toBe(0);
  });

  test('a crashing custom actor is restarted without touching traffic', async () => {
    const [crashPort] = await freePorts(1);
    using dir = tempDir();
    // An actor that crashes whenever its HTTP endpoint is hit.
    const mod = dir.write(
      'crashy.ts',
      `import http from 'node:http';
import { defineActor, fromCallback, setup } from '${path.join(ROOT, 'src/index.ts')}';
export default defineActor<{ port: number }>({
  name: 'crashy',
  logic: (ctx) => setup({
    actors: { srv: fromCallback(({ sendBack }) => {
      const s = http.createServer((req, res) => { res.end('bye'); sendBack({ type: 'crash' }); });
      s.listen(ctx.options.port, '127.0.0.1', () => ctx.log.info('crashy up'));
      return () => { s.closeAllConnections(); s.close(); };
    }) },
  }).createMachine({ invoke: { src: 'srv' }, on: { crash: { actions: () => { throw new Error('crashy crashed'); } } } }),
});
`,
    );
    const echo = net.createServer((s) => s.pipe(s)).listen(0, '127.0.0.1');
    await once(echo, 'listening');
    await using gh = await Daemon.start(
      dir.write(
        'gh.yaml',
        `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 1 }
upstreams: [ { name: app, backends: [ "127.0.0.1:${(echo.address() as net.AddressInfo).port}" ] } ]
listeners: [ { name: tcp-in, protocol: tcp, listen: "127.0.0.1:0", upstream: app } ]
actors: [ { name: crashy, module: ${mod}, restart: permanent, options: { port: ${crashPort} } } ]
`,
      ),
    );
    await gh.waitForLog((l) => l.msg === 'crashy up');
    const open = await connect(gh.port('tcp-in'));
    expect(await open.send('before')).toBe('before');
    expect(await httpGet(crashPort!)).toBe('bye');
    const report = await gh.waitForLog((l) => l.msg === 'supervisor report' && l.offender === 'actor:crashy');
    expect(report).toMatchObject({ supervisor: 'actors', errorContext: 'child_terminated', reason: 'error' });
    // Restarted: its server is back on the same port (the crashed incarnation released it).
    await until(() => gh.logs.filter((l) => l.msg === 'crashy up').length === 2, 10_000, 'crashy restarted');
    expect(await httpGet(crashPort!)).toBe('bye');
    await until(() => gh.logs.filter((l) => l.msg === 'crashy up').length === 3, 10_000, 'crashy restarted twice');
    // Traffic was not touched.
    expect(await open.send('after')).toBe('after');
    const m = await (await gh.admin('/metrics')).text();
    expect(metric(m, 'gatehouse_actor_restarts_total', { supervisor: 'actors' })).toBe(2);
    await open.close();
    expect(await gh.stop()).toBe(0);
    echo.close();
    await once(echo, 'close');
  });
});
