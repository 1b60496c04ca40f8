import http from 'node:http';
import pino from 'pino';
import { Subject } from 'rxjs';
import { Client } from 'undici';
import type { TreeNode, TreeOptions } from '../../src/runtime/actor.ts';
import type { ActorEvent } from '../../src/runtime/events.ts';
import { startAdminServer } from '../../src/admin/server.ts';
import type { AdminServer, AdminServerOptions } from '../../src/admin/server.ts';
import type { AdminBackend, DaemonInfo, ListenerCounters, ReloadResult, UpstreamsView } from '../../src/admin/types.ts';

/** An AdminBackend whose answers tests set directly, and which records what it was asked. */
export class FakeBackend implements AdminBackend {
  debug = false;
  isReady = true;
  detail: Record<string, unknown> = { starting: ['listener:web'] };
  treeRoot: TreeNode = {
    id: 'root',
    type: 'supervisor',
    state: 'running',
    status: 'running',
    restarts: 0,
    children: [{ id: 'shard-0', type: 'shard', state: 'running', status: 'running', restarts: 1, children: [] }],
  };
  treeCalls: TreeOptions[] = [];
  treeError: Error | undefined;
  counts: Record<string, number> = { supervisor: 2, connection: 7 };
  countsError: Error | undefined;
  counters: ListenerCounters[] = [];
  shards = [
    { shard: 0, up: true },
    { shard: 1, up: false },
  ];
  view: UpstreamsView = {
    upstreams: [
      {
        name: 'app',
        balance: 'round_robin',
        backends: [
          { address: '127.0.0.1:9001', healthy: true, breaker: 'closed', activeConnections: 3, weight: 1, admin: 'ready' },
          { address: '127.0.0.1:9002', healthy: false, breaker: 'half_open', activeConnections: 0, weight: 2, admin: 'ready' },
        ],
      },
    ],
  };
  effectiveConfig: unknown = { admin: { listen: '127.0.0.1:0', token: '[redacted]' }, upstreams: [] };
  reloadResult: ReloadResult | Error = { ok: true, added: ['listener:b'], removed: [], changed: ['upstream:app'] };
  drained = 0;
  crashed: number[] = [];
  readonly events = new Subject<ActorEvent & { shard?: number }>();
  readonly actorEvents$ = this.events.asObservable();

  ready(): boolean {
    return this.isReady;
  }
  readyDetail(): Record<string, unknown> {
    return this.detail;
  }
  async tree(opts: TreeOptions): Promise<TreeNode> {
    this.treeCalls.push(opts);
    if (this.treeError) throw this.treeError;
    return this.treeRoot;
  }
  async actorCounts(): Promise<Record<string, number>> {
    if (this.countsError) throw this.countsError;
    return this.counts;
  }
  listenerCounters(): ListenerCounters[] {
    return this.counters;
  }
  shardsUp(): { shard: number; up: boolean }[] {
    return this.shards;
  }
  upstreams(): UpstreamsView {
    return this.view;
  }
  daemonInfo: DaemonInfo = { configFile: '/etc/gatehouse/gatehouse.yaml', shards: 2, listeners: [{ name: 'web', protocol: 'tcp', listen: '127.0.0.1:0' }] };
  info(): DaemonInfo {
    return this.daemonInfo;
  }
  config(): unknown {
    return this.effectiveConfig;
  }
  async reload(): Promise<ReloadResult> {
    if (this.reloadResult instanceof Error) throw this.reloadResult;
    return this.reloadResult;
  }
  drain(): void {
    this.drained++;
  }
  /** Actors this fake backend runs, and those crashed through the admin API. */
  actors = new Set(['probe:app/127.0.0.1:9001']);
  crashedActors: string[] = [];
  crashActor(id: string): boolean {
    if (!this.actors.has(id)) return false;
    this.crashedActors.push(id);
    return true;
  }

  crashShard(index: number): boolean {
    if (!this.shards.some((s) => s.shard === index)) return false;
    this.crashed.push(index);
    return true;
  }
}

export interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: any;
}

export interface Fixture extends AsyncDisposable {
  backend: FakeBackend;
  server: AdminServer;
  origin: string;
  /** Parsed pino lines written by the server. */
  logs: Record<string, unknown>[];
  request(method: string, path: string, headers?: Record<string, string>): Promise<Answer>;
}

/** Starts the admin server on port 0 with a fake backend and a keep-alive undici client. */
export async function startFixture(
  opts: { debug?: boolean; backend?: FakeBackend } & Partial<Omit<AdminServerOptions, 'backend' | 'log'>> = {},
): Promise<Fixture> {
  const backend = opts.backend ?? new FakeBackend();
  if (opts.debug !== undefined) backend.debug = opts.debug;
  const logs: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line)) });
  const server = await startAdminServer({ host: '127.0.0.1', port: 0, ...opts, backend, log });
  const origin = `http://127.0.0.1:${server.address.port}`;
  const client = new Client(origin);
  return {
    backend,
    server,
    origin,
    logs,
    async request(method, path, headers = {}) {
      const r = await client.request({ method: method as 'GET', path, headers });
      const text = await r.body.text();
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
      return { status: r.statusCode, headers: r.headers, text, json };
    },
    async [Symbol.asyncDispose]() {
      await client.close();
      await server.close();
    },
  };
}

/** A raw Server-Sent Events reader over node:http: wait for text to arrive, then close. */
export interface SseReader {
  status: number;
  headers: http.IncomingHttpHeaders;
  text(): string;
  /** Resolves once the received text satisfies `pred`; rejects after `ms`. */
  waitFor(pred: (text: string) => boolean, ms?: number): Promise<string>;
  ended: Promise<void>;
  close(): void;
}

export function openSse(origin: string, path: string, headers: Record<string, string> = {}): Promise<SseReader> {
  return new Promise((resolve, reject) => {
    const req = http.get(`${origin}${path}`, { headers, agent: false }, (res) => {
      let buf = '';
      const waiters = new Set<() => void>();
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        for (const w of [...waiters]) w();
      });
      const ended = new Promise<void>((done) => res.once('close', () => done()));
      resolve({
        status: res.statusCode ?? 0,
        headers: res.headers,
        text: () => buf,
        ended,
        waitFor(pred, ms = 2_000) {
          return new Promise((ok, fail) => {
            const check = (): void => {
              if (!pred(buf)) return;
              waiters.delete(check);
              clearTimeout(timer);
              ok(buf);
            };
            const timer = setTimeout(() => {
              waiters.delete(check);
              fail(new Error(`timed out waiting for SSE text; got: ${JSON.stringify(buf)}`));
            }, ms);
            waiters.add(check);
            check();
          });
        },
        close: () => req.destroy(),
      });
    });
    req.on('error', (err) => {
      if ((err as NodeJS.ErrnoException).code !== 'ECONNRESET') reject(err);
    });
  });
}

/** Prometheus text exposition as `name{labels}` -> value, plus `# TYPE` lines by name. */
export function parseExposition(text: string): { samples: Map<string, number>; types: Map<string, string> } {
  const samples = new Map<string, number>();
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    const t = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (t) types.set(t[1]!, t[2]!);
    else if (line && !line.startsWith('#')) {
      const i = line.lastIndexOf(' ');
      samples.set(line.slice(0, i), Number(line.slice(i + 1)));
    }
  }
  return { samples, types };
}
