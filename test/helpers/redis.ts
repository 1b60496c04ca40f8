import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';

/**
 * A private `redis-server` for one test (no persistence; it runs in a temp directory, where a
 * replica writes the RDB it receives), on a free port, that the test can stop and start again
 * on the same port (a Redis restart), or pause (`SIGSTOP`: a Redis that answers nothing). Needs Debian's `redis-server` (`.ci/run` installs it when missing).
 *
 * @example
 * await using redis = await RedisServer.start();
 * // config: cluster: { redis: redis.url }
 * await redis.stop(); await redis.restart();
 */
export class RedisServer {
  port = 0;
  #child: ChildProcess | undefined;
  #args: string[] = [];
  /** Its working directory (a replica writes the RDB it receives there), removed on dispose. */
  #dir = '';

  /** `args`: more `redis-server` options, kept for restarts (`['--replicaof', '127.0.0.1', '6379']`). */
  static async start(opts: { args?: string[] } = {}): Promise<RedisServer> {
    const r = new RedisServer();
    r.port = await freePort();
    r.#args = opts.args ?? [];
    r.#dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-redis-'));
    await r.restart();
    return r;
  }

  /** The PID of the running server (undefined while stopped). */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /**
   * A client of its own (the caller disconnects it): for CONFIG SET, filling memory, reading
   * state. It reconnects when cut (a failover kills the clients of a promoted replica).
   */
  client(): Redis {
    const c = new Redis({ host: '127.0.0.1', port: this.port, lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => 100 });
    c.on('error', () => {});
    return c;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.#child !== undefined;
  }

  /** Starts (again) on the same port; resolves once it accepts connections. */
  async restart(): Promise<void> {
    if (this.#child) return;
    const child = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no', '--dir', this.#dir, ...this.#args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.#child = child;
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const ready = new Promise<void>((resolve, reject) => {
      const onData = (): void => {
        if (out.includes('Ready to accept connections')) {
          child.stdout!.off('data', onData);
          resolve();
        }
      };
      child.stdout!.on('data', onData);
      child.once('exit', (code) => reject(new Error(`redis-server exited with ${code}: ${out}`)));
    });
    await ready;
  }

  /** Stops it (SIGTERM) and waits for the exit. */
  async stop(): Promise<void> {
    const c = this.#child;
    if (!c) return;
    this.#child = undefined;
    if (c.exitCode === null && c.signalCode === null) {
      c.kill('SIGTERM');
      await once(c, 'exit');
    }
  }

  /** SIGSTOP / SIGCONT: Redis keeps its connections but answers nothing meanwhile. */
  pause(on: boolean): void {
    this.#child?.kill(on ? 'SIGSTOP' : 'SIGCONT');
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.pause(false);
    await this.stop();
    if (this.#dir) rmSync(this.#dir, { recursive: true, force: true });
  }
}

/**
 * A private Redis Sentinel (`redis-server CONF --sentinel`) on a free port, watching one master
 * (`sentinel monitor NAME 127.0.0.1 PORT 1`: quorum 1, so it alone decides a failover). Its
 * config, which Sentinel rewrites, lives in a temp directory removed on dispose.
 *
 * @example
 * await using sentinel = await RedisSentinel.start({ name: 'main', masterPort: redis.port });
 * // config: cluster: { redis: sentinel.url('main') }
 */
export class RedisSentinel {
  port = 0;
  #child: ChildProcess | undefined;
  #dir = '';

  static async start(opts: { name: string; masterPort: number; downAfterMs?: number; failoverTimeoutMs?: number }): Promise<RedisSentinel> {
    const s = new RedisSentinel();
    s.port = await freePort();
    s.#dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-sentinel-'));
    const conf = path.join(s.#dir, 'sentinel.conf');
    const { name } = opts;
    writeFileSync(
      conf,
      [
        `port ${s.port}`,
        'bind 127.0.0.1',
        'protected-mode no',
        `dir "${s.#dir}"`,
        `sentinel monitor ${name} 127.0.0.1 ${opts.masterPort} 1`,
        `sentinel down-after-milliseconds ${name} ${opts.downAfterMs ?? 1_000}`,
        `sentinel failover-timeout ${name} ${opts.failoverTimeoutMs ?? 5_000}`,
        '',
      ].join('\n'),
    );
    const child = spawn('redis-server', [conf, '--sentinel'], { stdio: ['ignore', 'pipe', 'pipe'] });
    s.#child = child;
    let out = '';
    await new Promise<void>((resolve, reject) => {
      const onData = (d: Buffer): void => {
        out += d.toString();
        if (out.includes('+monitor master')) {
          child.stdout!.off('data', onData);
          child.off('exit', onExit);
          resolve();
        }
      };
      const onExit = (code: number | null): void => reject(new Error(`redis-server --sentinel exited with ${code}: ${out}`));
      child.stdout!.on('data', onData);
      child.once('exit', onExit);
    });
    // Its output is not read further: drained so that the pipe never fills.
    child.stdout!.resume();
    child.stderr!.resume();
    return s;
  }

  /** The `cluster.redis` URL of the master `name` through this sentinel. */
  url(name: string): string {
    return `redis+sentinel://127.0.0.1:${this.port}/${name}`;
  }

  /** A client of the sentinel itself (`SENTINEL ...` commands); the caller disconnects it. */
  client(): Redis {
    const c = new Redis({ host: '127.0.0.1', port: this.port, lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null });
    c.on('error', () => {});
    return c;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    const c = this.#child;
    this.#child = undefined;
    if (c && c.exitCode === null && c.signalCode === null) {
      c.kill('SIGTERM');
      await once(c, 'exit');
    }
    if (this.#dir) rmSync(this.#dir, { recursive: true, force: true });
  }
}

async function freePort(): Promise<number> {
  const s = net.createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as net.AddressInfo).port;
  s.close();
  await once(s, 'close');
  return port;
}
