import { once } from 'node:events';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import pino from 'pino';
import { describe, expect, onTestFinished, test } from 'vitest';
import { createMachine } from 'xstate';
import { ShardActor } from '../../src/actors/shard.ts';
import { Actor } from '../../src/runtime/actor.ts';
import { MachineActor } from '../../src/runtime/machine-actor.ts';
import { liveResources, trackResource, trackWorker } from '../../src/runtime/resources.ts';
import { PiscinaShardHost } from '../../src/workers/pool.ts';
import { StateTable } from '../../src/workers/state-table.ts';
import { tcpShardConfig } from '../helpers/shard-config.ts';
import { connect, startEchoServer } from '../helpers/net.ts';
import { Daemon, tempDir } from '../helpers/daemon.ts';
import { checkLeaks, expectNoLeaks, fileBaseline, findLeaks, LeakError, takeBaseline } from './leaks.ts';
import { installOriginTracking } from './origins.ts';

// Long enough for what vitest itself schedules around a test (a ~100 ms report timer) to pass,
// short enough to keep the file quick. The real check waits up to 2 s.
const GRACE = { graceMs: 300 };

/** The smallest actor: it stops at once when asked. */
class IdleActor extends Actor {
  constructor(id: string) {
    super(id, 'leak-test-idle');
    this.markRunning();
  }
  get state(): string {
    return 'idle';
  }
  protected requestStop(): boolean {
    this.exit('shutdown');
    return false;
  }
  protected forceStop(): void {
    this.exit('killed');
  }
}

const waitingMachine = createMachine({ id: 'waiting', initial: 'waiting', states: { waiting: {} } });

async function listen(): Promise<net.Server> {
  const server = net.createServer();
  onTestFinished(() => void server.close());
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return server;
}

/** A connected client and the server's side of it. */
async function socketPair(server: net.Server): Promise<[net.Socket, net.Socket]> {
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const client = net.connect(portOf(server), '127.0.0.1');
  onTestFinished(() => void client.destroy());
  await once(client, 'connect');
  const [peer] = await accepted;
  onTestFinished(() => void peer.destroy());
  return [client, peer];
}

function portOf(server: net.Server): number {
  return (server.address() as net.AddressInfo).port;
}

interface Case {
  name: string;
  /** Creates the leak and returns its clean-up. */
  leak: () => Promise<() => Promise<void> | void>;
  /** Each pattern must match one reported leak. */
  reported: () => RegExp[];
}

let port = 0;
let pid = 0;

const cases: Case[] = [
  {
    name: 'a live actor (Actor subclass)',
    leak: async () => {
      const a = new IdleActor('idle:1');
      onTestFinished(() => a.kill());
      return async () => void (await a.shutdown(1_000));
    },
    reported: () => [/^actor leak-test-idle idle:1 state=idle status=running\n {2}created at:\n(.|\n)*leak-check\.test\.ts/],
  },
  {
    name: 'a live xstate MachineActor',
    leak: async () => {
      const a = new MachineActor({ id: 'machine:1', type: 'leak-test-machine', logic: waitingMachine }).start();
      onTestFinished(() => a.kill());
      return async () => void (await a.shutdown(1_000));
    },
    reported: () => [/^actor leak-test-machine machine:1 state=waiting status=running\n/],
  },
  {
    name: 'a listening TCP server',
    leak: async () => {
      const server = await listen();
      port = portOf(server);
      return () => new Promise<void>((r) => server.close(() => r()));
    },
    reported: () => [new RegExp(`^1 × TCP server \\[TCPSERVERWRAP\\] created after the baseline, still alive\\n {2}server listening on 127\\.0\\.0\\.1:${port}$`)],
  },
  {
    name: "an unref'd listening TCP server",
    leak: async () => {
      const server = await listen();
      server.unref();
      port = portOf(server);
      return () => new Promise<void>((r) => server.close(() => r()));
    },
    reported: () => [new RegExp(`^1 × TCP server \\[TCPSERVERWRAP\\][^\\n]*\\n {2}server listening on 127\\.0\\.0\\.1:${port} \\(unref'd\\)$`)],
  },
  {
    name: 'a connected socket',
    leak: async () => {
      const server = await listen();
      port = portOf(server);
      const accepted = once(server, 'connection') as Promise<[net.Socket]>;
      const client = net.connect(port, '127.0.0.1');
      onTestFinished(() => void client.destroy());
      await once(client, 'connect');
      const [peer] = await accepted;
      server.close();
      return async () => {
        client.destroy();
        peer.destroy();
        await once(server, 'close');
      };
    },
    reported: () => [
      new RegExp(`^2 × TCP socket \\[TCPWRAP\\] created after the baseline, still alive\\n(.|\\n)*-> 127\\.0\\.0\\.1:${port} \\(open\\)`),
    ],
  },
  {
    name: 'a pending setTimeout',
    leak: async () => {
      const t = setTimeout(() => {}, 60_000);
      onTestFinished(() => clearTimeout(t));
      return () => clearTimeout(t);
    },
    reported: () => [/^1 × timer \(setTimeout\/setInterval not cleared\) \[Timeout\] created after the baseline, still alive\n {2}setTimeout of 60000 ms$/],
  },
  {
    name: 'a running setInterval',
    leak: async () => {
      const t = setInterval(() => {}, 10);
      onTestFinished(() => clearInterval(t));
      return () => clearInterval(t);
    },
    reported: () => [/^1 × timer .*\[Timeout\][^\n]*\n {2}setInterval every 10 ms$/],
  },
  {
    name: "an unref'd setInterval",
    leak: async () => {
      const t = setInterval(() => {}, 10).unref();
      onTestFinished(() => clearInterval(t));
      return () => clearInterval(t);
    },
    reported: () => [/^1 × timer .*\[Timeout\][^\n]*\n {2}setInterval every 10 ms \(unref'd\)$/],
  },
  {
    name: 'a worker thread, tracked by the set-up file',
    leak: async () => {
      const w = new Worker('setInterval(() => {}, 1_000)', { eval: true });
      onTestFinished(() => void w.terminate());
      await once(w, 'online');
      return async () => void (await w.terminate());
    },
    reported: () => [/^worker thread "eval: setInterval\(\(\) => \{\}, 1_000\)" still alive\n {2}created at:/],
  },
  {
    name: 'a worker thread named by production code (trackWorker)',
    leak: async () => {
      const w = new Worker('setInterval(() => {}, 1_000)', { eval: true });
      onTestFinished(() => void w.terminate());
      trackWorker(w, 'shard-7');
      await once(w, 'online');
      return async () => void (await w.terminate());
    },
    reported: () => [/^worker thread "shard-7" still alive/],
  },
  {
    name: 'a tracked resource (trackResource)',
    leak: async () => {
      const untrack = trackResource('worker pool', 'shards (2 threads)');
      onTestFinished(untrack);
      return untrack;
    },
    reported: () => [/^worker pool "shards \(2 threads\)" still alive/],
  },
  {
    name: 'a child process',
    leak: async () => {
      const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)']);
      onTestFinished(() => void child.kill('SIGKILL'));
      await once(child, 'spawn');
      pid = child.pid!;
      return async () => {
        const closed = once(child, 'close');
        child.kill();
        await closed;
      };
    },
    reported: () => [
      new RegExp(`^1 × child process \\[PROCESSWRAP\\][^\\n]*\\n {2}child process pid ${pid}: .*node -e setInterval`),
      new RegExp(`^3 × pipe .*\\[PIPEWRAP\\](.|\\n)*stdio pipe of child process pid ${pid}`),
    ],
  },
];

describe('the leak check', () => {
  test('starts from a recorded file baseline with nothing leaked', async () => {
    expect(fileBaseline()).toBeDefined();
    expect(await checkLeaks()).toEqual([]);
  });

  test.each(cases)('reports $name, and nothing once it is cleaned up', async (c) => {
    const cleanup = await c.leak();
    const leaks = await checkLeaks(GRACE);
    const patterns = c.reported();
    expect(leaks).toHaveLength(patterns.length);
    for (const p of patterns) expect(leaks).toContainEqual(expect.stringMatching(p));
    await cleanup();
    expect(await checkLeaks()).toEqual([]);
  });

  test('names every leak at once in the thrown report', async () => {
    const a = new IdleActor('idle:2');
    onTestFinished(() => a.kill());
    const server = await listen();
    const t = setTimeout(() => {}, 60_000);
    onTestFinished(() => clearTimeout(t));

    const err = await expectNoLeaks(GRACE).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(LeakError);
    expect((err as LeakError).code).toBe('GH_ERR_TEST_LEAK');
    expect((err as LeakError).leaks).toHaveLength(3);
    const msg = (err as LeakError).message;
    expect(msg).toMatch(/^Leak check: 3 leak\(s\) still alive after a 300 ms grace:\n/);
    expect(msg).toContain('  - actor leak-test-idle idle:2 state=idle status=running');
    expect(msg).toContain(`  - 1 × TCP server [TCPSERVERWRAP] created after the baseline, still alive\n      server listening on 127.0.0.1:${portOf(server)}`);
    expect(msg).toContain('  - 1 × timer');

    a.kill();
    server.close();
    clearTimeout(t);
    await expectNoLeaks();
  });

  test('waits for resources that are still closing instead of reporting them', async () => {
    const server = await listen();
    const client = net.connect(portOf(server), '127.0.0.1');
    onTestFinished(() => void client.destroy());
    await once(client, 'connect');
    client.end();
    server.close();
    // Right now the sockets are ending and the server waits for them.
    expect(findLeaks().length).toBeGreaterThan(0);
    expect(await checkLeaks()).toEqual([]);
  });

  test('compares with the baseline it is given', async () => {
    const t = setTimeout(() => {}, 60_000);
    onTestFinished(() => clearTimeout(t));
    const withTimer = await takeBaseline();
    expect(await checkLeaks({ baseline: withTimer })).toEqual([]);
    clearTimeout(t);
  });

  test('leaves no timer of its own behind', async () => {
    const t = setTimeout(() => {}, 60_000);
    onTestFinished(() => clearTimeout(t));
    expect(await checkLeaks(GRACE)).toHaveLength(1);
    clearTimeout(t);
    // Synchronously, with no chance for anything to settle: only the checker could be left.
    expect(findLeaks()).toEqual([]);
    expect(liveResources()).toEqual([]);
  });

  test('reports a new socket even when an older one closed (equal counts do not cancel out)', async () => {
    const server = await listen();
    const [oldClient, oldPeer] = await socketPair(server);
    const baseline = await takeBaseline();
    oldClient.destroy();
    oldPeer.destroy();
    const [client] = await socketPair(server);
    // As many TCP sockets as at the baseline, but not the same ones.
    const leaks = await checkLeaks({ baseline, ...GRACE });
    expect(leaks).toEqual([expect.stringMatching(new RegExp(`^2 × TCP socket \\[TCPWRAP\\][^\\n]*\\n {2}socket 127\\.0\\.0\\.1:${client.localPort} -> 127\\.0\\.0\\.1:${portOf(server)} \\(open\\)\\n`))]);
    client.destroy();
    expect(await checkLeaks({ baseline })).toEqual([]);
  });

  test('reports an actor left inside a shard worker thread, asked through the shard', async () => {
    await using echo = await startEchoServer();
    const host = new PiscinaShardHost(1, pino({ level: 'silent' }));
    onTestFinished(() => host.close());
    const table = StateTable.create();
    let shardPort = 0;
    const shard = new ShardActor({
      index: 0,
      host,
      table,
      log: pino({ level: 'silent' }),
      init: () => ({ shard: 0, config: tcpShardConfig(echo.port, { shutdownTimeoutMs: 2_000 }), buffers: table.buffers, reusePort: true }),
      listenerSlots: () => [0],
      shutdownTimeoutMs: () => 2_000,
      onReady: (ls) => (shardPort = ls[0]!.port),
    });
    onTestFinished(() => shard.kill());
    await shard.start();
    const baseline = await takeBaseline();

    // A connection through the shard: its actor lives in the worker thread, which this thread's
    // live set cannot see.
    const client = await connect(shardPort);
    expect(await client.send('hi')).toBe('hi');
    const leaks = await checkLeaks({ baseline, ...GRACE });
    expect(leaks).toContainEqual(expect.stringMatching(/^actor connection conn:0:\d+ state=\w+ status=running inside shard-0 \(a worker thread\)$/));

    await client.close();
    expect(await checkLeaks({ baseline })).toEqual([]);
    await shard.shutdown(5_000);
  });

  test('reports a daemon whose state table is not back to zero, and nothing once its clients left', async () => {
    await using echo = await startEchoServer();
    using dir = tempDir();
    const yaml = `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 1, shutdownTimeout: 2s }
upstreams: [ { name: app, backends: [ "127.0.0.1:${echo.port}" ], healthCheck: { enabled: false } } ]
listeners: [ { name: tcp-in, protocol: tcp, listen: "127.0.0.1:0", upstream: app, maxConnectionsPerIp: 5 } ]
`;
    await using gh = await Daemon.start(dir.write('gh.yaml', yaml));
    const client = await connect(gh.port('tcp-in'));
    expect(await client.send('hi')).toBe('hi');
    // A client still connected holds a place everywhere: what a count that never came down looks like.
    expect(await gh.idleLeftovers(300)).toEqual([
      'listener tcp-in: active 1 (by shard: shard 0: 1)',
      'listener tcp-in: 1 per-IP entries held',
      `backend app/127.0.0.1:${echo.port}: active 1 (by shard: shard 0: 1)`,
      '1 connection actor(s) alive',
    ]);
    expect((await gh.json<{ idle: boolean }>('/state')).idle).toBe(false);
    await client.close();
    expect(await gh.idleLeftovers()).toEqual([]);
    expect((await gh.json<{ idle: boolean }>('/state')).idle).toBe(true);
  });

  // Last in the file: once on, origin tracking stays on for the rest of the process.
  test('with GATEHOUSE_LEAK_ORIGINS=1, says where a timer and a server were created', async () => {
    const before = process.env.GATEHOUSE_LEAK_ORIGINS;
    process.env.GATEHOUSE_LEAK_ORIGINS = '1';
    onTestFinished(() => {
      if (before === undefined) delete process.env.GATEHOUSE_LEAK_ORIGINS;
      else process.env.GATEHOUSE_LEAK_ORIGINS = before;
    });
    expect(installOriginTracking()).toBe(true);
    const server = await listen();
    const t = setInterval(() => {}, 250);
    onTestFinished(() => clearInterval(t));

    const leaks = await checkLeaks(GRACE);
    expect(leaks).toHaveLength(2);
    expect(leaks).toContainEqual(
      expect.stringMatching(/^1 × timer[^\n]*\n {2}setInterval every 250 ms\n {4}created at:\n {6}at .*leak-check\.test\.ts:\d+/),
    );
    expect(leaks).toContainEqual(
      expect.stringMatching(/^1 × TCP server[^\n]*\n {2}server listening on [^\n]*\n {4}created by async work started at:\n {6}at .*leak-check\.test\.ts:\d+/),
    );
    clearInterval(t);
    server.close();
    expect(await checkLeaks()).toEqual([]);
  });
});
