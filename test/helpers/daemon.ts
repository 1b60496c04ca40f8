import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { onTestFinished } from 'vitest';
import { parse as parseYaml } from 'yaml';
import type { StateView } from '../../src/admin/state-view.ts';
import { DAEMON_NODE_FLAGS } from '../../src/daemon/node-flags.ts';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI = path.join(ROOT, 'bin/gatehouse.mjs');

export interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

/** Calls `fn` with each JSON log line a process writes to `input` (lines that are not JSON are skipped). */
export function onLogLines(input: NodeJS.ReadableStream, fn: (l: LogLine) => void): void {
  createInterface({ input }).on('line', (line) => {
    let l: LogLine;
    try {
      l = JSON.parse(line) as LogLine;
    } catch {
      return;
    }
    fn(l);
  });
}

/** A temp directory with files; removed by `dispose`. */
export function tempDir(): { dir: string; write(name: string, text: string): string; [Symbol.dispose](): void } {
  const dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-test-'));
  return {
    dir,
    write: (name, text) => {
      const f = path.join(dir, name);
      writeFileSync(f, text);
      return f;
    },
    [Symbol.dispose]: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Runs the CLI to completion; returns exit code and output. */
export async function runCli(args: string[], opts: { cwd?: string } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, CLI, ...args], { cwd: opts.cwd ?? ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, GATEHOUSE_LOG_PRETTY: '0' } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const [code] = (await once(child, 'close', { signal: AbortSignal.timeout(20_000) })) as [number];
  return { code, stdout, stderr };
}

/** Actor types that live exactly as long as one client: none may be left once clients are gone. */
const PER_CLIENT_ACTORS = ['connection', 'http-connection', 'client-proxy'];
const IDLE_TIMEOUT_MS = 5_000;

/** The non-zero cells of a `GET /state` answer, one line each (empty when idle). */
export function stateLeftovers(view: StateView): string[] {
  const out: string[] = [];
  const shards = (ns: number[]): string => ns.map((n, i) => (n === 0 ? '' : ` shard ${i}: ${n}`)).filter(Boolean).join(',');
  for (const l of view.listeners) {
    const name = l.listener ?? `retired row ${l.slot}`;
    if (l.active !== 0 || l.activeByShard.some((n) => n !== 0)) out.push(`listener ${name}: active ${l.active} (by shard:${shards(l.activeByShard) || ' none'})`);
    if (l.perIpEntries !== 0) out.push(`listener ${name}: ${l.perIpEntries} per-IP entries held`);
  }
  for (const b of view.backends) {
    if (b.active !== 0 || b.activeByShard.some((n) => n !== 0)) out.push(`backend ${b.backend ?? `retired row ${b.slot}`}: active ${b.active} (by shard:${shards(b.activeByShard) || ' none'})`);
  }
  return out;
}

/**
 * A daemon started from the CLI as a child process on a temp config. Its JSON log lines are
 * parsed as they come; `waitForLog` awaits one (with a deadline). Ports are read back from the
 * `admin listening` and `listener ready` lines, so configs use port 0 everywhere.
 *
 * Disposing a daemon that still runs first checks that it is idle ({@link Daemon.idleLeftovers}:
 * state table back to zero, no connection or hub client actor left in any shard), because a
 * SIGKILL would hide a count that never came down. What is left fails the test that started it.
 */
export class Daemon {
  readonly child: ChildProcess;
  readonly logs: LogLine[] = [];
  readonly stderr: string[] = [];
  adminUrl = '';
  readonly ports = new Map<string, number>();
  readonly #waiters = new Set<{ pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }>();
  readonly exited: Promise<number>;
  /** Set to a reason to skip the idle check on dispose (a test that leaves clients open on purpose). */
  skipIdleCheck: string | undefined;
  #leftovers: string[] = [];
  #reportOnTestEnd = false;
  readonly #configFile: string;

  private constructor(child: ChildProcess, configFile: string) {
    this.child = child;
    this.#configFile = configFile;
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 : -1))));
    onLogLines(child.stdout!, (l) => {
      this.logs.push(l);
      if (l.msg === 'admin listening') {
        const a = l.address as { host: string; port: number } | string;
        this.adminUrl = typeof a === 'string' ? `http://${a}` : `http://${a.host}:${a.port}`;
      }
      if (l.msg === 'listener ready') this.ports.set(l.listener as string, Number(String(l.address).split(':').pop()));
      for (const w of this.#waiters) {
        if (w.pred(l)) {
          this.#waiters.delete(w);
          w.resolve(l);
        }
      }
    });
    createInterface({ input: child.stderr! }).on('line', (line) => this.stderr.push(line));
  }

  static async start(configFile: string, opts: { debug?: boolean; timeoutMs?: number } = {}): Promise<Daemon> {
    const args = [...DAEMON_NODE_FLAGS, CLI, 'start', '--config', configFile, ...(opts.debug ? ['--debug'] : [])];
    const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, GATEHOUSE_LOG_PRETTY: '0' } });
    const d = new Daemon(child, configFile);
    const started = d.waitForLog((l) => l.msg === 'gatehouse started', opts.timeoutMs ?? 20_000);
    const exit = d.exited.then((code) => {
      throw new Error(`daemon exited with ${code} before it started:\n${d.stderr.join('\n')}\n${JSON.stringify(d.logs.slice(-5))}`);
    });
    await Promise.race([started, exit]);
    try {
      // Reported once the test is over, so that a failure of the test itself still shows first.
      onTestFinished(() => d.#throwLeftovers());
      d.#reportOnTestEnd = true;
    } catch {
      // Started outside a test (beforeAll): dispose throws instead.
    }
    return d;
  }

  /** The config file's `admin.token` as a header, read now: a reload may have rotated it. */
  #bearer(): RequestInit {
    let token: unknown;
    try {
      token = (parseYaml(readFileSync(this.#configFile, 'utf8')) as { admin?: { token?: unknown } } | null)?.admin?.token;
    } catch {
      token = undefined;
    }
    return typeof token === 'string' ? { headers: { authorization: `Bearer ${token}` } } : {};
  }

  #throwLeftovers(): void {
    const left = this.#leftovers;
    this.#leftovers = [];
    if (left.length > 0) throw new Error(`daemon not idle after the test (state table or per-client actors not back to zero):\n  ${left.join('\n  ')}`);
  }

  /**
   * Polls `GET /state` and `gatehouse_actors` until the state table is back to zero (every
   * listener's and backend's active count, every per-IP entry) and no connection or hub client
   * actor is left, or `timeoutMs` passes; returns what is still not zero (empty: idle).
   *
   * @example
   * await client.close();
   * expect(await gh.idleLeftovers()).toEqual([]);
   */
  async idleLeftovers(timeoutMs = IDLE_TIMEOUT_MS): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    const init = this.#bearer();
    for (;;) {
      let left: string[];
      try {
        const r = await this.admin('/state', init);
        if (r.status !== 200) throw new Error(`GET /state answered ${r.status}: ${await r.text()}`);
        left = stateLeftovers((await r.json()) as StateView);
        const text = await (await this.admin('/metrics', init)).text();
        for (const type of PER_CLIENT_ACTORS) {
          const n = metric(text, 'gatehouse_actors', { type }) ?? 0;
          if (n !== 0) left.push(`${n} ${type} actor(s) alive`);
        }
      } catch (err) {
        left = [`admin API not answering: ${(err as Error).message}`];
      }
      if (left.length === 0 || Date.now() > deadline) return left;
      await new Promise<void>((r) => setImmediate(r));
    }
  }

  port(listener: string): number {
    const p = this.ports.get(listener);
    if (!p) throw new Error(`no port for listener ${listener}`);
    return p;
  }

  /** Resolves with the first log line (already seen or coming) that matches. */
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs = 10_000): Promise<LogLine> {
    const seen = this.logs.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise<LogLine>((resolve, reject) => {
      const deadline = AbortSignal.timeout(timeoutMs);
      const onAbort = (): void => {
        this.#waiters.delete(w);
        reject(new Error(`no matching log line within ${timeoutMs} ms; last lines: ${JSON.stringify(this.logs.slice(-5))}`));
      };
      const w = {
        pred,
        resolve: (l: LogLine) => {
          deadline.removeEventListener('abort', onAbort);
          resolve(l);
        },
      };
      deadline.addEventListener('abort', onAbort, { once: true });
      this.#waiters.add(w);
    });
  }

  async admin(pathAndQuery: string, init?: RequestInit): Promise<Response> {
    return fetch(`${this.adminUrl}${pathAndQuery}`, { ...init, signal: AbortSignal.timeout(10_000) });
  }

  async json<T = unknown>(pathAndQuery: string, init?: RequestInit): Promise<T> {
    const r = await this.admin(pathAndQuery, init);
    return (await r.json()) as T;
  }

  /** Sends a signal and awaits the exit code. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 20_000): Promise<number> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.exited;
    this.child.kill(signal);
    const deadline = AbortSignal.timeout(timeoutMs);
    const t = new Promise<number>((_, rej) => deadline.addEventListener('abort', () => rej(new Error(`daemon did not exit within ${timeoutMs} ms`)), { once: true }));
    t.catch(() => {});
    return Promise.race([this.exited, t]);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      if (this.adminUrl && this.skipIdleCheck === undefined) this.#leftovers = await this.idleLeftovers();
      this.child.kill('SIGKILL');
      await this.exited;
    }
    this.child.stdout?.destroy();
    this.child.stderr?.destroy();
    if (!this.#reportOnTestEnd) this.#throwLeftovers();
  }
}

/** Polls `fn` until it returns a truthy value, or throws after `timeoutMs`. */
export async function until<T>(fn: () => Promise<T> | T, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what} not reached within ${timeoutMs} ms (last: ${String(last)})`);
    await new Promise<void>((r) => setImmediate(r));
  }
}

/** One Prometheus sample's value, or undefined. */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const ls = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => ls[k] === v)) return Number(m[3]);
  }
  return undefined;
}
