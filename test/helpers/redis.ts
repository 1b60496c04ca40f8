import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';

/**
 * A private `redis-server` for one test (nothing on disk), on a free port, that the test can
 * stop and start again on the same port (a Redis restart), or pause (`SIGSTOP`: a Redis that
 * answers nothing). Needs Debian's `redis-server` (`.ci/run` installs it when missing).
 *
 * @example
 * await using redis = await RedisServer.start();
 * // config: cluster: { redis: redis.url }
 * await redis.stop(); await redis.restart();
 */
export class RedisServer {
  port = 0;
  #child: ChildProcess | undefined;

  static async start(): Promise<RedisServer> {
    const r = new RedisServer();
    r.port = await freePort();
    await r.restart();
    return r;
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
    const child = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
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
