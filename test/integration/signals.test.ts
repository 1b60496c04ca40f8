import net from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { describe, expect, test } from 'vitest';
import { CLI, ROOT, onLogLines, tempDir, type LogLine } from '../helpers/daemon.ts';
import { startEchoServer } from '../helpers/net.ts';

/**
 * `gatehouse start` as a child process, watched from its very first output: the shim's marker on
 * stderr (GATEHOUSE_TEST_STARTUP_MARK=1: written once its signal handlers are installed, before
 * any of the daemon's modules load), then the JSON log lines. Signals are sent on these events,
 * never after a sleep.
 */
class Starting {
  readonly child: ChildProcess;
  readonly logs: LogLine[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly #waiters = new Set<{ pred: (l: LogLine) => boolean; resolve: () => void }>();
  readonly #marked: Promise<void>;
  readonly #firstByte: Promise<void>;

  constructor(configFile: string) {
    this.child = spawn(process.execPath, [CLI, 'start', '--config', configFile], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, GATEHOUSE_LOG_PRETTY: '0', GATEHOUSE_TEST_STARTUP_MARK: '1' },
    });
    this.exited = new Promise((r) => this.child.once('exit', (code, signal) => r({ code, signal })));
    this.#firstByte = once(this.child.stdout!, 'data').then(() => {});
    this.#firstByte.catch(() => {});
    let marked: () => void = () => {};
    this.#marked = new Promise((r) => (marked = r));
    createInterface({ input: this.child.stderr! }).on('line', (line) => {
      if (line === 'gatehouse: signal handlers installed') marked();
    });
    onLogLines(this.child.stdout!, (l) => {
      this.logs.push(l);
      for (const w of this.#waiters) {
        if (w.pred(l)) {
          this.#waiters.delete(w);
          w.resolve();
        }
      }
    });
  }

  /** Resolves at a moment of the start-up; rejects if the process exits first or after 20 s. */
  async at(moment: Moment): Promise<void> {
    let reached: Promise<void>;
    if (moment === 'handlers installed') reached = this.#marked;
    else if (moment === 'first output byte') reached = this.#firstByte;
    else reached = this.log((l) => l.msg === moment);
    const gone = this.exited.then((e) => {
      throw new Error(`exited (${e.code ?? e.signal}) before ${moment}: ${JSON.stringify(this.logs.slice(-3))}`);
    });
    const late = new Promise<never>((_, rej) => AbortSignal.timeout(20_000).addEventListener('abort', () => rej(new Error(`${moment} not reached`))));
    late.catch(() => {});
    gone.catch(() => {});
    await Promise.race([reached, gone, late]);
  }

  log(pred: (l: LogLine) => boolean): Promise<void> {
    if (this.logs.some(pred)) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.add({ pred, resolve }));
  }

  /** Sends a signal and awaits the exit (20 s at most). */
  async stop(signal: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    this.child.kill(signal);
    const late = new Promise<never>((_, rej) => AbortSignal.timeout(20_000).addEventListener('abort', () => rej(new Error('no exit within 20 s'))));
    late.catch(() => {});
    return Promise.race([this.exited, late]);
  }

  index(msg: string): number {
    return this.logs.findIndex((l) => l.msg === msg);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
    this.child.stdout?.destroy();
    this.child.stderr?.destroy();
  }
}

type Moment = 'handlers installed' | 'first output byte' | 'admin listening' | 'listener ready' | 'gatehouse started';
const MOMENTS: Moment[] = ['handlers installed', 'first output byte', 'admin listening', 'listener ready', 'gatehouse started'];

/** Every address the daemon logged as bound (admin, listeners): none may accept after the exit. */
function boundPorts(logs: LogLine[]): number[] {
  const ports: number[] = [];
  for (const l of logs) {
    if (l.msg === 'admin listening') ports.push((l.address as { port: number }).port);
    if (l.msg === 'listener ready') ports.push(Number(String(l.address).split(':').pop()));
  }
  return ports;
}

async function refused(port: number): Promise<boolean> {
  const s = net.connect({ port, host: '127.0.0.1' });
  const r = await new Promise<boolean>((resolve) => {
    s.once('connect', () => resolve(false));
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
  });
  s.destroy();
  return r;
}

function config(workers: number, echo: number): string {
  return `admin: { listen: "127.0.0.1:0" }
runtime: { workers: ${workers}, shutdownTimeout: 5s }
upstreams: [ { name: app, backends: [ "127.0.0.1:${echo}" ] } ]
listeners: [ { name: tcp-in, protocol: tcp, listen: "127.0.0.1:0", upstream: app } ]
`;
}

describe.each([0, 1])('signals during start-up, workers: %i', (workers) => {
  const stops: [NodeJS.Signals, Moment][] = [
    ...MOMENTS.map((m) => ['SIGTERM', m] as [NodeJS.Signals, Moment]),
    ['SIGINT', 'handlers installed'],
    ['SIGINT', 'admin listening'],
  ];

  test.each(stops)('%s at "%s": stops what started, exits 0, logs it, leaves nothing bound', async (signal, moment) => {
    await using echo = await startEchoServer();
    using dir = tempDir();
    await using gh = new Starting(dir.write('gh.yaml', config(workers, echo.port)));
    await gh.at(moment);
    expect(await gh.stop(signal)).toEqual({ code: 0, signal: null });
    expect(gh.logs).toContainEqual(expect.objectContaining({ msg: 'shutting down', signal }));
    expect(gh.logs.map((l) => l.msg)).not.toContain('gatehouse failed to start');
    // Whatever had started was stopped by the daemon (its last line), in order: admin last.
    if (gh.index('admin listening') >= 0) {
      expect(gh.logs.at(-1)!.msg).toBe('gatehouse stopped');
      expect(gh.index('shutting down')).toBeLessThan(gh.index('gatehouse stopped'));
    }
    for (const port of boundPorts(gh.logs)) expect(await refused(port)).toBe(true);
  });

  test.each(['handlers installed', 'first output byte', 'admin listening'] as Moment[])(
    'SIGHUP at "%s": the daemon starts, then reloads; SIGTERM then stops it',
    async (moment) => {
      await using echo = await startEchoServer();
      using dir = tempDir();
      await using gh = new Starting(dir.write('gh.yaml', config(workers, echo.port)));
      await gh.at(moment);
      gh.child.kill('SIGHUP');
      await gh.at('gatehouse started');
      await gh.log((l) => l.msg === 'config reloaded');
      expect(gh.index('gatehouse started')).toBeLessThan(gh.index('config reloaded'));
      expect(gh.logs).toContainEqual(expect.objectContaining({ msg: 'SIGHUP: reloading' }));
      expect(await gh.stop('SIGTERM')).toEqual({ code: 0, signal: null });
      for (const port of boundPorts(gh.logs)) expect(await refused(port)).toBe(true);
    },
  );
});

describe('a second signal', () => {
  test('a second SIGTERM during start-up exits 1 at once, without waiting for the start or the drain', async () => {
    // A custom actor module whose loading waits until the test lets go: a start-up that lasts.
    await using gate = await startEchoServer();
    using dir = tempDir();
    const mod = dir.write(
      'slow.ts',
      `import net from 'node:net';
import { defineActor, fromCallback } from '${ROOT}/src/index.ts';
await new Promise((resolve) => net.connect(${gate.port}, '127.0.0.1').on('close', resolve).on('error', resolve));
export default defineActor({ name: 'slow', logic: () => fromCallback(() => () => {}) });
`,
    );
    const file = dir.write('gh.yaml', `${config(1, gate.port)}actors: [ { name: slow, module: ${mod} } ]\n`);
    await using gh = new Starting(file);
    if (gate.sockets.size === 0) await once(gate.server, 'connection');
    gh.child.kill('SIGTERM');
    await gh.log((l) => l.msg === 'shutting down');
    expect(await gh.stop('SIGTERM')).toEqual({ code: 1, signal: null });
    expect(gh.logs).toContainEqual(expect.objectContaining({ msg: 'second signal: exiting without waiting for the drain', signal: 'SIGTERM' }));
    expect(gh.index('admin listening')).toBe(-1);
  });
});
