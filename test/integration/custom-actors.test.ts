import net from 'node:net';
import { once } from 'node:events';
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { Daemon, ROOT, metric, runCli, tempDir, until } from '../helpers/daemon.ts';
import { connect, startEchoServer } from '../helpers/net.ts';
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

/**
 * A custom actor that crashes while `options.flag` names an existing file: `how: start` throws
 * from logic(), `how: timer` throws from a timer of its own (outside xstate). With `port` it
 * serves its name over HTTP.
 */
const FLAKY = `import http from 'node:http';
import { existsSync } from 'node:fs';
import { defineActor, fromCallback } from '${path.join(ROOT, 'src/index.ts')}';
export default defineActor<{ port?: number; flag: string; how: 'start' | 'timer' }>({
  name: 'flaky',
  logic: (ctx) => {
    if (ctx.options.how === 'start' && existsSync(ctx.options.flag)) throw new Error('flaky: refused to start');
    return fromCallback(() => {
      if (existsSync(ctx.options.flag)) setImmediate(() => { throw new Error('flaky: crashed in a timer'); });
      const s = ctx.options.port ? http.createServer((req, res) => res.end('good')).listen(ctx.options.port, '127.0.0.1') : undefined;
      ctx.log.info('flaky up');
      return () => {
        s?.closeAllConnections();
        s?.close();
        ctx.log.info('flaky stopped');
      };
    });
  },
});
`;

async function httpGet(port: number, path = '/'): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(5_000) });
  return res.text();
}

describe('custom actors', () => {
  test('the quickstart serves through its listener and its hub (a token from gatehouse token), and gatehouse tree shows the whole tree', async () => {
    const [a, b, listen, hub, node, web] = await freePorts(6);
    using dir = tempDir();
    // The quickstart as shipped, with free ports, its actor modules resolved from examples/.
    const text = readFileSync(path.join(ROOT, 'examples/quickstart.yaml'), 'utf8')
      .replaceAll('127.0.0.1:9901', '127.0.0.1:0')
      .replaceAll('9001', String(a))
      .replaceAll('9002', String(b))
      .replaceAll('127.0.0.1:15000', `127.0.0.1:${listen}`)
      .replaceAll('127.0.0.1:18090', `127.0.0.1:${hub}`)
      .replaceAll('127.0.0.1:18080', `127.0.0.1:${web}`)
      .replaceAll('7001', String(node))
      .replaceAll('./actors/', `${path.join(ROOT, 'examples/actors')}/`);
    await using gh = await Daemon.start(dir.write('quickstart.yaml', text));
    await gh.waitForLog((l) => l.msg === 'demo backend listening' && l.port === b);
    const answers = await Promise.all(Array.from({ length: 6 }, () => httpGet(listen!)));
    expect(answers.every((t) => /^hello from [ab] \(request \d+, GET \/\)\n$/.test(t))).toBe(true);
    expect(new Set(answers.map((t) => t.slice(0, 12)))).toEqual(new Set(['hello from a', 'hello from b']));
    // The HTTP listener, as the README shows it: route "api" strips its prefix, "site" takes the rest.
    expect(await httpGet(web!, '/api/users')).toMatch(/^hello from [ab] \(request \d+, GET \/users\)\n$/);
    expect(await httpGet(web!, '/about')).toMatch(/^hello from [ab] \(request \d+, GET \/about\)\n$/);

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
    expect(found.map((l) => `${l.type}:${l.id}`)).toEqual([
      'listener:listener:web', 'listener:listener:tcp-in', 'listener:listener:hub',
      'listener:listener:web', 'listener:listener:tcp-in', 'listener:listener:hub',
    ]);
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

  test('one crash-looping custom actor fails alone: the others serve, it shows failed, restarts counted; a reload listing it starts it again', async () => {
    const [goodPort] = await freePorts(1);
    using dir = tempDir();
    const flag = dir.write('broken', '');
    const mod = dir.write('flaky.ts', FLAKY);
    const file = dir.write(
      'gh.yaml',
      `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 1 }
actors:
  - { name: good, module: ${mod}, options: { port: ${goodPort}, flag: /nonexistent, how: timer } }
  - { name: loop-timer, module: ${mod}, options: { flag: ${flag}, how: timer } }
  - { name: loop-start, module: ${mod}, maxRestarts: 2, period: 1m, options: { flag: ${flag}, how: start } }
`,
    );
    await using gh = await Daemon.start(file);
    const gaveUp = (id: string) => gh.waitForLog((l) => l.msg === 'supervisor report' && l.errorContext === 'child_gave_up' && l.offender === id);
    // An error thrown from the actor's own timer (outside xstate) and a throw from logic() at start: both are crashes.
    expect(await gaveUp('actor:loop-timer')).toMatchObject({ supervisor: 'actors', reason: 'reached_max_restart_intensity', maxRestarts: 3, periodMs: 5_000 });
    expect(await gaveUp('actor:loop-start')).toMatchObject({ supervisor: 'actors', maxRestarts: 2, periodMs: 60_000 });
    expect(gh.logs).toContainEqual(expect.objectContaining({ msg: 'custom actor code threw: the actor crashed', actorId: 'actor:loop-timer', origin: 'uncaughtException' }));
    expect(await httpGet(goodPort!)).toBe('good');
    expect((await gh.admin('/readyz')).status).toBe(200);

    type Node = { id: string; status: string; state: string; restarts: number; children: Node[] };
    const tree = await gh.json<Node>('/actors');
    expect(tree.children.map((c) => c.id)).toEqual(['admin', 'actors', 'registry', 'upstreams', 'hubs', 'shards']);
    const actors = tree.children.find((c) => c.id === 'actors')!;
    expect(actors.status).toBe('running');
    expect(actors.children.map((c) => [c.id, c.status, c.state, c.restarts])).toEqual([
      ['actor:good', 'running', 'active', 0],
      ['actor:loop-timer', 'failed', 'failed', 3],
      ['actor:loop-start', 'failed', 'failed', 2],
    ]);
    const m = await (await gh.admin('/metrics')).text();
    expect(metric(m, 'gatehouse_actor_restarts_total', { supervisor: 'actors' })).toBe(5);
    const printed = await runCli(['tree', '--admin', gh.adminUrl]);
    expect(printed.stdout).toMatch(/^├─ actors {2}supervisor {2}running$/m);
    expect(printed.stdout).toMatch(/actor:loop-timer {2}flaky {2}failed {2}restarts=3$/m);

    // Fixed (the flag is gone): a reload of the same config starts both again, in their places.
    rmSync(flag);
    const res = await gh.admin('/reload', { method: 'POST' });
    expect(res.status).toBe(200);
    await gh.waitForLog((l) => l.msg === 'custom actors started again by the reload');
    await until(async () => {
      const t = await gh.json<Node>('/actors');
      const ids = t.children.find((c) => c.id === 'actors')!.children.map((c) => `${c.id}:${c.status}`);
      return ids.join() === 'actor:good:running,actor:loop-timer:running,actor:loop-start:running';
    }, 10_000, 'both started again');
    expect(await httpGet(goodPort!)).toBe('good');
    expect(await gh.stop()).toBe(0);
  });

  test('after a custom actor gave up and came back, the tree order is the spec order and SIGTERM stops the shards before the custom actors', async () => {
    using dir = tempDir();
    const flag = dir.write('broken', '');
    const mod = dir.write('flaky.ts', FLAKY);
    await using echo = await startEchoServer();
    const file = dir.write(
      'gh.yaml',
      `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 1, shutdownTimeout: 5s }
upstreams: [ { name: app, backends: [ "127.0.0.1:${echo.port}" ] } ]
listeners: [ { name: tcp-in, protocol: tcp, listen: "127.0.0.1:0", upstream: app } ]
actors: [ { name: a, module: ${mod}, options: { flag: ${flag}, how: timer } } ]
`,
    );
    await using gh = await Daemon.start(file);
    await gh.waitForLog((l) => l.msg === 'supervisor report' && l.errorContext === 'child_gave_up' && l.offender === 'actor:a');
    rmSync(flag);
    expect((await gh.admin('/reload', { method: 'POST' })).status).toBe(200);
    const up = () => gh.logs.filter((l) => l.msg === 'flaky up' && l.actorId === 'actor:a').length;
    await until(async () => (await gh.json<{ children: { id: string; children: { status: string }[] }[] }>('/actors')).children[1]!.children[0]!.status === 'running', 10_000, 'a running');
    const tree = await gh.json<{ children: { id: string }[] }>('/actors');
    expect(tree.children.map((c) => c.id)).toEqual(['admin', 'actors', 'registry', 'upstreams', 'hubs', 'shards']);
    const open = await connect(gh.port('tcp-in'));
    expect(await open.send('x')).toBe('x');
    expect(up()).toBe(5);
    const stopping = gh.stop();
    // The drain holds the open connection: the shard is still draining while actor:a runs.
    await gh.waitForLog((l) => l.msg === 'shard draining');
    expect(gh.logs.some((l) => l.msg === 'flaky stopped' && l.actorId === 'actor:a' && gh.logs.indexOf(l) > gh.logs.findIndex((x) => x.msg === 'shutting down'))).toBe(false);
    await open.close();
    expect(await stopping).toBe(0);
    const at = (pred: (l: (typeof gh.logs)[number]) => boolean) => gh.logs.findIndex(pred);
    const shutdown = at((l) => l.msg === 'shutting down');
    const shardStopped = at((l) => l.msg === 'shard stopped');
    const actorStopped = gh.logs.findLastIndex((l) => l.msg === 'flaky stopped' && l.actorId === 'actor:a');
    expect(shutdown).toBeGreaterThan(0);
    expect(shardStopped).toBeGreaterThan(shutdown);
    expect(actorStopped).toBeGreaterThan(shardStopped);
  });
});
