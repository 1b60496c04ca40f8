/**
 * Child processes of the bench driver: every backend, row (proxy) and load generator is started
 * here, optionally pinned with `taskset`, logged to a file, and stopped by its PID (SIGTERM, then
 * SIGKILL after a bound). `stopAll()` runs on normal exit, on error and on Ctrl-C, so no child is
 * left behind; the bench's own Node children also exit by themselves when the driver's stdin pipe
 * to them closes (see `child.ts`), which covers a driver killed with SIGKILL.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface SpawnOptions {
  /** CPU list for `taskset -c` (e.g. "1"); undefined = not pinned. */
  cpus?: string | undefined;
  /**
   * Soft open-files limit for the child (`prlimit --nofile`, else `sh -c 'ulimit -n'`); the hard
   * limit is left as it is, so this can be at most the hard limit. Default: Procs' own setting.
   */
  nofile?: number | undefined;
  env?: Record<string, string>;
  /** Keep the last N stdout lines in memory (load generators print their JSON result there). */
  keepLines?: number;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** One child process. The PID is the program's own: `taskset` execs it. */
export class Child {
  readonly name: string;
  readonly proc: ChildProcess;
  readonly exited: Promise<ExitInfo>;
  readonly lines: string[] = [];
  #exit: ExitInfo | undefined;
  readonly #keep: number;
  readonly #log: WriteStream;
  readonly #watchers = new Set<(line: string) => void>();

  constructor(name: string, proc: ChildProcess, logFile: string, keep: number) {
    this.name = name;
    this.proc = proc;
    this.#keep = keep;
    this.#log = createWriteStream(logFile, { flags: 'a' });
    this.exited = new Promise((resolve) => {
      proc.once('exit', (code, signal) => {
        this.#exit = { code, signal };
        resolve(this.#exit);
      });
      // spawn failure (e.g. ENOENT): there is no 'exit' then.
      proc.once('error', (err) => {
        this.#log.write(`spawn error: ${err.message}\n`);
        if (!this.#exit) {
          this.#exit = { code: -1, signal: null };
          resolve(this.#exit);
        }
      });
    });
    // Nothing is written to the child's stdin; closing it at our exit tells our own children to go.
    proc.stdin?.on('error', () => {});
    let partial = '';
    proc.stdout?.setEncoding('utf8');
    proc.stdout?.on('data', (chunk: string) => {
      this.#log.write(chunk);
      const parts = (partial + chunk).split('\n');
      partial = parts.pop() ?? '';
      for (const line of parts) this.#line(line);
    });
    proc.stdout?.on('end', () => {
      if (partial) this.#line(partial);
      partial = '';
    });
    proc.stderr?.on('data', (chunk: Buffer) => this.#log.write(chunk));
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  get exitInfo(): ExitInfo | undefined {
    return this.#exit;
  }

  #line(line: string): void {
    if (this.#keep > 0) {
      this.lines.push(line);
      if (this.lines.length > this.#keep) this.lines.shift();
    }
    for (const w of this.#watchers) w(line);
  }

  /** Resolves when a stdout line matches; rejects on timeout or if the child exits first. */
  waitLine(re: RegExp, timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (err: Error | undefined, line?: string): void => {
        clearTimeout(timer);
        this.#watchers.delete(watch);
        if (err) reject(err);
        else resolve(line!);
      };
      const watch = (line: string): void => {
        if (re.test(line)) done(undefined, line);
      };
      this.#watchers.add(watch);
      timer = setTimeout(() => done(new Error(`${this.name}: no line matching ${re} within ${timeoutMs} ms`)), timeoutMs);
      void this.exited.then((e) => done(new Error(`${this.name} exited (code ${e.code}, signal ${e.signal}) before ${re}`)));
    });
  }

  /** SIGTERM, then SIGKILL after `graceMs`. Resolves once the process is gone. */
  async stop(graceMs = 5_000): Promise<ExitInfo> {
    if (this.#exit) return this.#exit;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    const e = await this.exited;
    clearTimeout(timer);
    this.#log.end();
    return e;
  }

  /** Last resort, synchronous (process 'exit' hook). */
  killNow(): void {
    if (!this.#exit) this.proc.kill('SIGKILL');
  }
}

/** All children of the driver, for one clean shutdown. */
export class Procs {
  readonly #dir: string;
  readonly #children = new Set<Child>();
  readonly #nofile: number | undefined;
  readonly #prlimit: boolean;
  #closed = false;

  /** `nofile`: soft open-files limit given to every child (the idle suite holds ~2 fds per connection in the proxy). */
  constructor(logDir: string, opts: { nofile?: number | undefined; prlimit?: boolean } = {}) {
    this.#dir = logDir;
    this.#nofile = opts.nofile;
    this.#prlimit = opts.prlimit ?? false;
  }

  spawn(name: string, cmd: string, args: string[], opts: SpawnOptions = {}): Child {
    if (this.#closed) throw new Error(`shutting down: not starting ${name}`);
    let [file, argv] = opts.cpus !== undefined ? ['taskset', ['-c', opts.cpus, cmd, ...args]] : [cmd, args];
    // Every wrapper execs the next program: the PID stays the program's own.
    const nofile = opts.nofile ?? this.#nofile;
    if (nofile !== undefined) {
      [file, argv] = this.#prlimit
        ? ['prlimit', [`--nofile=${nofile}:`, file, ...argv]]
        : ['sh', ['-c', `ulimit -S -n ${nofile} && exec "$@"`, 'sh', file, ...argv]];
    }
    const proc = spawn(file, argv, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...opts.env },
    });
    const child = new Child(name, proc, path.join(this.#dir, `${name}.log`), opts.keepLines ?? 0);
    this.#children.add(child);
    void child.exited.then(() => this.#children.delete(child));
    return child;
  }

  get live(): Child[] {
    return [...this.#children];
  }

  /** Stops every child still running, all in parallel, each bounded by `graceMs`. */
  async stopAll(graceMs = 5_000): Promise<void> {
    this.#closed = true;
    await Promise.all([...this.#children].map((c) => c.stop(graceMs)));
  }

  /** Synchronous SIGKILL of whatever is left (for the process 'exit' hook). */
  killAllNow(): void {
    this.#closed = true;
    for (const c of this.#children) c.killNow();
  }
}

/** A free TCP port on 127.0.0.1 (bound to port 0, then released). */
export async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen({ host: '127.0.0.1', port: 0, exclusive: true }, resolve);
  });
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

/** Polls until a TCP connect to 127.0.0.1:port succeeds (bounded). */
export async function waitPort(port: number, timeoutMs: number, child?: Child): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < 10_000 && Date.now() < deadline; i++) {
    if (child?.exitInfo) throw new Error(`${child.name} exited (code ${child.exitInfo.code}) before listening on ${port}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port });
      const t = setTimeout(() => {
        s.destroy();
        resolve(false);
      }, 1_000);
      s.once('connect', () => {
        clearTimeout(t);
        s.destroy();
        resolve(true);
      });
      s.once('error', () => {
        clearTimeout(t);
        resolve(false);
      });
    });
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`port ${port} not listening within ${timeoutMs} ms`);
}
