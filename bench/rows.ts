/**
 * The rows of the bench: one entry per proxy (or `direct`, the ceiling without a proxy). A row
 * says whether it can run here and how to start it as one foreground process listening on
 * `127.0.0.1:listenPort` and forwarding to `upHost:upPort`. Adding a peer (nginx, envoy, ...) is
 * one more entry; every suite then measures it like the others.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { DAEMON_NODE_FLAGS } from '../src/daemon/node-flags.ts';

export interface RowContext {
  listenPort: number;
  upHost: string;
  upPort: number;
  /** Scratch directory of this run (configs go here). */
  dir: string;
  /** Worker threads / processes a peer with its own threading should use (1 when pinned to one CPU). */
  peerThreads: number;
  /** Node 24 (the driver's own binary). */
  node: string;
  /** The project's checkout. */
  repo: string;
}

export interface RowLaunch {
  cmd: string;
  args: string[];
  /** A stdout line that means "ready" (besides the port accepting connections). */
  readyLine?: RegExp;
  /** Extra facts for the report (config used, threads). */
  note?: string;
}

export interface Row {
  name: string;
  /** `direct`: the load generator talks to the backend itself. */
  direct?: boolean;
  /** One line for the docs/table. */
  describe: string;
  /** Only run when named in --rows (diagnostic rows). */
  optional?: boolean;
  /** undefined when the row can run here, else why not (it is then skipped with a note). */
  unavailable?(): string | undefined;
  launch?(ctx: RowContext): RowLaunch;
}

/** Whether a command is on PATH. */
export function onPath(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * Gatehouse with one TCP listener; `workers` data-plane threads; the chosen or the naive connection
 * actor. `alt`: run the daemon from the checkout in $GATEHOUSE_ALT instead of this one (A/B of a
 * src/ prototype against the committed code in the same run; the row is skipped when it is unset).
 */
function gatehouse(name: string, workers: number, connectionActor: 'light' | 'xstate', alt = false): Row {
  return {
    name,
    describe:
      `Gatehouse, runtime.workers: ${workers}, connectionActor: ${connectionActor}` +
      `${connectionActor === 'xstate' ? ' (naive: a full xstate actor per connection)' : ''}` +
      `${alt ? ', run from the checkout in $GATEHOUSE_ALT (A/B of a prototype)' : ''}`,
    ...(alt ? { optional: true, unavailable: () => (process.env.GATEHOUSE_ALT && existsSync(path.join(process.env.GATEHOUSE_ALT, 'bin/gatehouse.mjs')) ? undefined : 'GATEHOUSE_ALT is not a Gatehouse checkout') } : {}),
    launch(ctx) {
      const repo = alt ? path.resolve(process.env.GATEHOUSE_ALT!) : ctx.repo;
      const file = path.join(ctx.dir, `${name}.yaml`);
      writeFileSync(
        file,
        [
          '# written by bench/run.ts',
          'admin: { listen: "127.0.0.1:0" }',
          `runtime: { workers: ${workers}, connectionActor: ${connectionActor}, shutdownTimeout: 5s }`,
          'log: { level: info }',
          `upstreams: [ { name: up, backends: [ "${ctx.upHost}:${ctx.upPort}" ] } ]`,
          `listeners: [ { name: bench, protocol: tcp, listen: "127.0.0.1:${ctx.listenPort}", upstream: up, maxConnections: 100000 } ]`,
          '',
        ].join('\n'),
      );
      return {
        cmd: ctx.node,
        args: [...DAEMON_NODE_FLAGS, path.join(repo, 'bin/gatehouse.mjs'), 'start', '--config', file],
        readyLine: /"msg":"gatehouse started"/,
        note: `workers=${workers} connectionActor=${connectionActor}${alt ? ` from ${repo}` : ''}`,
      };
    },
  };
}

export const ROWS: Row[] = [
  { name: 'direct', direct: true, describe: 'no proxy: the load generator talks to the backend (the ceiling)' },
  {
    name: 'node-pipe',
    describe: 'plain single-thread Node proxy: net server + pipe() both ways (bench/peers/node-pipe.ts)',
    launch: (ctx) => ({
      cmd: ctx.node,
      args: [path.join(ctx.repo, 'bench/peers/node-pipe.ts'), String(ctx.listenPort), ctx.upHost, String(ctx.upPort)],
      readyLine: /"ready":true/,
    }),
  },
  {
    name: 'node-pipe-thread',
    optional: true,
    describe: 'node-pipe inside one worker thread (reusePort), as Gatehouse runs its data plane: tells thread costs from Gatehouse costs',
    launch: (ctx) => ({
      cmd: ctx.node,
      args: [path.join(ctx.repo, 'bench/peers/node-pipe.ts'), String(ctx.listenPort), ctx.upHost, String(ctx.upPort), '1'],
      readyLine: /"ready":true/,
      note: 'threads=1',
    }),
  },
  {
    name: 'node-pipe-2w',
    optional: true,
    describe: 'node-pipe in two worker threads with reusePort (the shape of gatehouse-w2)',
    launch: (ctx) => ({
      cmd: ctx.node,
      args: [path.join(ctx.repo, 'bench/peers/node-pipe.ts'), String(ctx.listenPort), ctx.upHost, String(ctx.upPort), '2'],
      readyLine: /"ready":true/,
      note: 'threads=2',
    }),
  },
  {
    name: 'node-pipe-fwd',
    optional: true,
    describe: 'node-pipe forwarding with handlers shared by all connections instead of pipe() (diagnostic: what pipe() costs)',
    launch: (ctx) => ({
      cmd: ctx.node,
      args: [path.join(ctx.repo, 'bench/peers/node-pipe.ts'), String(ctx.listenPort), ctx.upHost, String(ctx.upPort), '0', 'fwd'],
      readyLine: /"ready":true/,
      note: 'mode=fwd',
    }),
  },
  {
    name: 'node-pipe-hot',
    optional: true,
    describe: 'node-fwd reading into a reused buffer per socket (HOT_BUF_KIB, Node internals; diagnostic: what per-read allocation costs in bulk)',
    launch: (ctx) => ({
      cmd: ctx.node,
      args: [path.join(ctx.repo, 'bench/peers/node-pipe.ts'), String(ctx.listenPort), ctx.upHost, String(ctx.upPort), '0', 'hot'],
      readyLine: /"ready":true/,
      note: `mode=hot buffer=${process.env.HOT_BUF_KIB ?? 64} KiB`,
    }),
  },
  gatehouse('gatehouse-w1', 1, 'light'),
  gatehouse('gatehouse-w2', 2, 'light'),
  gatehouse('gatehouse-w1-xstate', 1, 'xstate'),
  gatehouse('gatehouse-w1-alt', 1, 'light', true),
  gatehouse('gatehouse-w2-alt', 2, 'light', true),
  {
    name: 'haproxy',
    describe: 'HAProxy, mode tcp, default buffers, nbthread 1 when pinned',
    unavailable: () => (onPath('haproxy') ? undefined : 'haproxy not on PATH'),
    launch(ctx) {
      const file = path.join(ctx.dir, `haproxy-${ctx.listenPort}.cfg`);
      writeFileSync(
        file,
        [
          'global',
          '  maxconn 9800',
          `  nbthread ${ctx.peerThreads}`,
          'defaults',
          '  mode tcp',
          '  timeout connect 5s',
          '  timeout client 120s',
          '  timeout server 120s',
          'frontend fe',
          `  bind 127.0.0.1:${ctx.listenPort}`,
          '  default_backend be',
          'backend be',
          `  server s1 ${ctx.upHost}:${ctx.upPort}`,
          '',
        ].join('\n'),
      );
      return { cmd: 'haproxy', args: ['-db', '-f', file], note: `nbthread=${ctx.peerThreads}` };
    },
  },
  {
    name: 'nginx',
    describe: 'nginx stream (L4) proxy, proxy_half_close on, default buffers, worker_processes 1 when pinned',
    unavailable: () => (!onPath('nginx') ? 'nginx not on PATH' : nginxStream() === undefined ? 'nginx has no stream module (apt-get install libnginx-mod-stream)' : undefined),
    launch(ctx) {
      const d = path.join(ctx.dir, `nginx-${ctx.listenPort}`);
      mkdirSync(d, { recursive: true });
      const mod = nginxStream();
      writeFileSync(
        path.join(d, 'nginx.conf'),
        [
          ...(mod && mod !== 'builtin' ? [`load_module ${mod};`] : []),
          `worker_processes ${ctx.peerThreads};`,
          'worker_rlimit_nofile 20000;',
          'daemon off;',
          'master_process on;',
          `pid ${d}/nginx.pid;`,
          `error_log ${d}/error.log warn;`,
          'events { worker_connections 19500; }',
          'stream {',
          `  upstream tb { server ${ctx.upHost}:${ctx.upPort}; }`,
          `  server { listen 127.0.0.1:${ctx.listenPort} backlog=4096; proxy_pass tb; proxy_half_close on; }`,
          '}',
          '',
        ].join('\n'),
      );
      // The PID is the master's; CPU and RSS are summed over it and its worker(s).
      return { cmd: 'nginx', args: ['-p', d, '-e', `${d}/error.log`, '-c', `${d}/nginx.conf`], note: `worker_processes=${ctx.peerThreads}` };
    },
  },
];

let nginxStreamCache: string | undefined | null = null;
/** nginx's stream module: 'builtin', the path of the dynamic module, or undefined when there is none. */
function nginxStream(): string | undefined {
  if (nginxStreamCache !== null) return nginxStreamCache;
  let v = '';
  try {
    // nginx -V prints to stderr.
    v = execFileSync('sh', ['-c', 'nginx -V 2>&1'], { encoding: 'utf8', timeout: 5_000 });
  } catch {
    v = '';
  }
  const dyn = ['/usr/lib/nginx/modules/ngx_stream_module.so', '/usr/share/nginx/modules/ngx_stream_module.so', '/usr/lib64/nginx/modules/ngx_stream_module.so'].find((f) => existsSync(f));
  nginxStreamCache = / --with-stream(?!=dynamic)(\s|$)/.test(v) ? 'builtin' : dyn;
  return nginxStreamCache;
}

/**
 * Extra node flags for one Node row from the environment: NODE_ARGS_<ROW> with the row name in
 * upper case and '-' as '_' (e.g. NODE_ARGS_GATEHOUSE_W1_ALT="--max-semi-space-size=1"), so two
 * rows can differ only in V8 flags within one run.
 */
export function rowNodeArgs(row: string): string[] {
  return (process.env[`NODE_ARGS_${row.toUpperCase().replace(/-/g, '_')}`] ?? '').split(' ').filter(Boolean);
}

/** The version line of a peer binary, for the facts of the report. */
export function versionOf(cmd: string, args: string[]): string | undefined {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 5_000 }).split('\n')[0]?.trim();
  } catch {
    return undefined;
  }
}
