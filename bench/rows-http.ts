/**
 * The rows of the HTTP suite (bench/http.ts), its loads, its targets and its report. Each row is
 * one process (tree) listening on `127.0.0.1:listenPort` as an HTTP/1.1 reverse proxy to the
 * suite's backend (bench/backends/http-backend.ts), with keep-alive to the backend, adding
 * `X-Forwarded-For` and `X-Request-Id` to every request (always on in Gatehouse; configured in
 * the peers so that all rows do the same work). The row shape is bench/rows.ts's. The TLS suite
 * (bench/http.ts --tls) has its own rows (TLS_ROWS: the same proxies terminating TLS), loads and
 * targets, and the same report.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { onPath, type Row, type RowContext } from './rows.ts';
import { haproxyCfg, nginxConf, tlsFiles } from './peers/http-configs.ts';
import { fmt, max, mdTable, median, min, ratio } from './lib/stats.ts';
import { DAEMON_NODE_FLAGS } from '../src/daemon/node-flags.ts';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The origin every bench request carries (`Origin`), listed in the `cors` of gatehouse-w1-mw. */
export const BENCH_ORIGIN = 'http://bench.example';

/** The Node peers: "the fastest Node peer" of a load is the one of these with the highest median. */
export const NODE_PEERS = ['node-http-undici', 'fastify'];

/** The Gatehouse config of an HTTP row: one `protocol: http` listener (TLS with `tlsDir`), one route to the backend. */
function gatehouseYaml(ctx: Pick<RowContext, 'listenPort' | 'upHost' | 'upPort'>, workers: number, mw: boolean, tlsDir?: string): string {
  const tls = tlsDir === undefined ? undefined : tlsFiles(tlsDir);
  return [
    '# written by bench/http.ts',
    'admin: { listen: "127.0.0.1:0" }',
    `runtime: { workers: ${workers}, shutdownTimeout: 5s }`,
    'log: { level: info }',
    'upstreams:',
    '  - name: up',
    `    backends: [ "${ctx.upHost}:${ctx.upPort}" ]`,
    // The default pool (256 sockets per backend and shard): as HAProxy (no server maxconn) and
    // nginx (keepalive 64 is an idle cache, not a cap), a request at c256 never waits for a socket.
    'listeners:',
    '  - name: bench',
    '    protocol: http',
    `    listen: "127.0.0.1:${ctx.listenPort}"`,
    '    maxConnections: 100000',
    ...(tls ? [`    tls: { certificates: [ { cert: "${tls.cert}", key: "${tls.key}" } ] }`] : []),
    `    accessLog: ${mw ? '{ sample: 0.01 }' : 'false'}`,
    '    routes:',
    '      - name: all',
    '        match: { pathPrefix: / }',
    '        upstream: up',
    ...(mw
      ? [
          // High enough that nothing is refused: the bucket's cost is measured, not its refusals.
          '        rateLimit: { perSecond: 100000000, burst: 100000000 }',
          `        cors: { origins: [ "${BENCH_ORIGIN}" ] }`,
        ]
      : []),
    '',
  ].join('\n');
}

let refusal: string | undefined | null = null;
/**
 * Why this checkout cannot serve an HTTP listener (`gatehouse check` refuses it), or undefined
 * when it can. Checked once per run on a sample config.
 */
export function gatehouseHttpRefusal(): string | undefined {
  if (refusal !== null) return refusal;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'gh-http-check-'));
  const file = path.join(dir, 'check.yaml');
  writeFileSync(file, gatehouseYaml({ listenPort: 1, upHost: '127.0.0.1', upPort: 2 }, 1, true));
  try {
    execFileSync(process.execPath, [path.join(REPO, 'bin/gatehouse.mjs'), 'check', '--config', file], { stdio: 'pipe', timeout: 30_000 });
    refusal = undefined;
  } catch (err) {
    const out = `${String((err as { stdout?: Buffer }).stdout ?? '')}${String((err as { stderr?: Buffer }).stderr ?? '')}`.trim();
    refusal = `gatehouse check refuses the http listener: ${out.split('\n').find((l) => l.includes('listeners')) ?? out.split('\n')[0] ?? 'exit code != 0'}`;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return refusal;
}

function gatehouse(name: string, workers: number, mw: boolean, tls = false): Row {
  return {
    name,
    describe:
      `Gatehouse, runtime.workers: ${workers}, one http listener${tls ? ' with tls (the run\'s certificate, defaults otherwise)' : ''}, one route, upstream pool at its default (maxConnections 256)` +
      (mw ? ', with route rateLimit (never refusing), cors and accessLog { sample: 0.01 }' : ', accessLog false'),
    unavailable: gatehouseHttpRefusal,
    launch(ctx) {
      const file = path.join(ctx.dir, `${name}.yaml`);
      writeFileSync(file, gatehouseYaml(ctx, workers, mw, tls ? ctx.dir : undefined));
      return {
        cmd: ctx.node,
        args: [...DAEMON_NODE_FLAGS, path.join(ctx.repo, 'bin/gatehouse.mjs'), 'start', '--config', file],
        readyLine: /"msg":"gatehouse started"/,
        note: `workers=${workers}${mw ? ' rateLimit+cors+accessLog 1%' : ''}`,
      };
    },
  };
}

function haproxy(tls: boolean): Row {
  return {
    name: 'haproxy',
    describe: `HAProxy, mode http${tls ? ', bind ... ssl crt (cert+key), stats socket' : ''}, option forwardfor, unique-id as X-Request-Id, http-reuse always, nbthread 1 when pinned`,
    unavailable: () => (onPath('haproxy') ? undefined : 'haproxy not on PATH'),
    launch(ctx) {
      const file = path.join(ctx.dir, `haproxy-${tls ? 'tls' : 'http'}-${ctx.listenPort}.cfg`);
      writeFileSync(file, haproxyCfg(ctx, tls ? tlsFiles(ctx.dir) : undefined));
      return { cmd: 'haproxy', args: ['-db', '-f', file], note: `nbthread=${ctx.peerThreads}` };
    },
  };
}

function nginx(tls: boolean): Row {
  return {
    name: 'nginx',
    describe: `nginx proxy_pass${tls ? ', listen ... ssl, ssl_session_tickets on' : ''}, upstream keepalive 64, HTTP/1.1 upstream, X-Forwarded-For, X-Request-Id $request_id, worker_processes 1 when pinned`,
    unavailable: () => (onPath('nginx') ? undefined : 'nginx not on PATH'),
    launch(ctx) {
      const d = path.join(ctx.dir, `nginx-${tls ? 'tls' : 'http'}-${ctx.listenPort}`);
      mkdirSync(d, { recursive: true });
      writeFileSync(path.join(d, 'nginx.conf'), nginxConf(ctx, d, tls ? tlsFiles(ctx.dir) : undefined));
      return { cmd: 'nginx', args: ['-p', d, '-e', `${d}/error.log`, '-c', `${d}/nginx.conf`], note: `worker_processes=${ctx.peerThreads}` };
    },
  };
}

/** The rows of the TLS suite: the C peers and gatehouse-w1 terminating TLS with the run's certificate. */
export const TLS_ROWS: Row[] = [haproxy(true), nginx(true), gatehouse('gatehouse-w1', 1, false, true)];

/** The rows of the HTTP suite, in table order. */
export const HTTP_ROWS: Row[] = [
  { name: 'direct', direct: true, describe: 'no proxy: wrk talks to the backend (the ceiling)' },
  haproxy(false),
  nginx(false),
  {
    name: 'node-http-undici',
    describe: 'node:http server + undici Pool (64 connections), one thread (bench/peers/http-undici.ts)',
    launch: (ctx) => ({
      cmd: ctx.node,
      args: [path.join(ctx.repo, 'bench/peers/http-undici.ts'), String(ctx.listenPort), ctx.upHost, String(ctx.upPort)],
      readyLine: /"ready":true/,
    }),
  },
  {
    name: 'fastify',
    describe: 'fastify + @fastify/http-proxy (undici, 64 connections), one thread (bench/peers/http-fastify.ts)',
    launch: (ctx) => ({
      cmd: ctx.node,
      args: [path.join(ctx.repo, 'bench/peers/http-fastify.ts'), String(ctx.listenPort), ctx.upHost, String(ctx.upPort)],
      readyLine: /"ready":true/,
    }),
  },
  gatehouse('gatehouse-w1', 1, false),
  gatehouse('gatehouse-w2', 2, false),
  gatehouse('gatehouse-w1-mw', 1, true),
];

/** The most idle client connections a row can hold here (HAProxy's maxconn above). */
export function idleCap(row: string): number {
  return row === 'haproxy' ? 9_500 : Number.POSITIVE_INFINITY;
}

/**
 * One target: `a / b` of a figure (req/s or p99) of a load, at least or at most `limit` (`goal`: a
 * softer aim shown beside it). `b` is a row, or 'node-best' (the fastest Node peer of that load).
 */
export interface HttpTarget { text: string; load: Load['name']; figure: 'rps' | 'p99'; a: string; b: string; limit: number; atLeast: boolean; goal?: number }

/** The targets of the HTTP suite (the idle one is checked apart: KiB per connection <= 6). */
export const HTTP_TARGETS: HttpTarget[] = [
  { text: 'c50 req/s gatehouse-w1 / haproxy', load: 'c50', figure: 'rps', a: 'gatehouse-w1', b: 'haproxy', limit: 0.6, atLeast: true, goal: 0.85 },
  { text: 'c256 req/s gatehouse-w1 / haproxy', load: 'c256', figure: 'rps', a: 'gatehouse-w1', b: 'haproxy', limit: 0.5, atLeast: true },
  { text: 'c50 p99 gatehouse-w1 / haproxy', load: 'c50', figure: 'p99', a: 'gatehouse-w1', b: 'haproxy', limit: 2, atLeast: false },
  { text: 'c256 p99 gatehouse-w1 / haproxy', load: 'c256', figure: 'p99', a: 'gatehouse-w1', b: 'haproxy', limit: 2, atLeast: false },
  { text: 'c50 req/s gatehouse-w1 / fastest Node peer', load: 'c50', figure: 'rps', a: 'gatehouse-w1', b: 'node-best', limit: 2, atLeast: true },
  { text: 'c256 req/s gatehouse-w1 / fastest Node peer', load: 'c256', figure: 'rps', a: 'gatehouse-w1', b: 'node-best', limit: 2, atLeast: true },
  { text: 'churn conn/s gatehouse-w1 / haproxy', load: 'churn', figure: 'rps', a: 'gatehouse-w1', b: 'haproxy', limit: 0.7, atLeast: true },
  { text: 'c50 req/s gatehouse-w1-mw / gatehouse-w1', load: 'c50', figure: 'rps', a: 'gatehouse-w1-mw', b: 'gatehouse-w1', limit: 0.9, atLeast: true },
];

/** The targets of the TLS suite (issue 12): handshakes per second and HTTPS req/s against HAProxy. */
export const TLS_TARGETS: HttpTarget[] = [
  { text: 'full handshakes/s gatehouse-w1 / haproxy', load: 'full', figure: 'rps', a: 'gatehouse-w1', b: 'haproxy', limit: 0.8, atLeast: true },
  { text: 'resumed handshakes/s gatehouse-w1 / haproxy', load: 'resumed', figure: 'rps', a: 'gatehouse-w1', b: 'haproxy', limit: 0.7, atLeast: true },
  { text: 'HTTPS c50 req/s gatehouse-w1 / haproxy', load: 'c50', figure: 'rps', a: 'gatehouse-w1', b: 'haproxy', limit: 0.6, atLeast: true },
];

/** The TLS figures of the issue not measured by the suite, and why. */
export const TLS_NOT_MEASURED = [
  'TLS bulk MB/s through a tcp listener: not measured (needs a TLS-speaking bulk client; the TCP suite\'s bulk loader is plain TCP)',
  'memory per idle TLS connection: not measured (the idle client bench/peers/http-idle-client.ts speaks plain HTTP only)',
];

/** The idle target: RSS growth per idle keep-alive client connection of gatehouse-w1, KiB. */
export const IDLE_TARGET_KIB = 6;

// ---------------------------------------------------------------------------------------------
// Loads, samples and the report

/**
 * One load: wrk keep-alive at `conns` connections, or one request per connection (`close`); with
 * `stime`, `conns` parallel `openssl s_time -www /` processes, each connecting, handshaking (full
 * with `new`, else resuming) and sending one HTTP/1.0 GET per connection, one connection at a time.
 */
export interface Load { name: 'c50' | 'c256' | 'churn' | 'full' | 'resumed' | 'close'; conns: number; close: boolean; what: string; stime?: 'new' | 'reuse' }

/** The loads of the suite, in the order they are measured within a rep. */
export const LOADS: Load[] = [
  { name: 'c50', conns: 50, close: false, what: 'keep-alive, 50 connections' },
  { name: 'c256', conns: 256, close: false, what: 'keep-alive, 256 connections' },
  { name: 'churn', conns: 50, close: true, what: 'churn: one request per connection (`Connection: close`), 50 connections' },
];

/** Parallel s_time processes of the TLS suite's handshake loads (env STIME_PROCS). */
export const STIME_PROCS = Number(process.env.STIME_PROCS ?? 8);

/** The loads of the TLS suite, in the order they are measured within a rep. */
export const TLS_LOADS: Load[] = [
  { name: 'full', conns: STIME_PROCS, close: true, stime: 'new', what: `full handshakes: ${STIME_PROCS} × \`openssl s_time -new -www /\` (TLS 1.3 full handshake + one GET per connection)` },
  { name: 'resumed', conns: STIME_PROCS, close: true, stime: 'reuse', what: `resumed handshakes: ${STIME_PROCS} × \`openssl s_time -reuse -www /\` (session ticket + one GET per connection)` },
  { name: 'close', conns: 50, close: true, what: 'wrk https, `Connection: close`, 50 connections (wrk resumes some sessions: see the resumed column)' },
  { name: 'c50', conns: 50, close: false, what: 'wrk https keep-alive, 50 connections' },
];

/**
 * One wrk run of a row under a load. `rps`: 2xx responses per second (churn: connections per
 * second); `kept`: the try used for this rep (the least foreign CPU); `sampled`: request heads the
 * backend sampled during the run, `withRequestId` / `withForwardedFor` those with the proxy's headers.
 */
export interface Sample {
  load: Load['name']; row: string; rep: number; try: number; kept: boolean;
  requests: number; secs: number; non2xx: number; sockErrors: number; rps: number; p50Ms: number; p99Ms: number;
  cpuUsPerReq: number; sysUsPerReq: number; cpuPct: number; foreignPct: number; stealPct: number; preBusyPct: number;
  sampled: number; withRequestId: number; withForwardedFor: number;
  /** TLS: % of handshakes resumed as the client saw them (s_time) and as the proxy counted them (Gatehouse, HAProxy); NaN: unknown. */
  clientResumedPct?: number; serverResumedPct?: number;
}

/** One idle run: a fresh proxy holding `open` of `n` idle keep-alive client connections; `value` KiB RSS per connection (NaN: not verified). */
export interface IdleSample {
  row: string; rep: number; value: number; verified: boolean; n: number; ready: number; open: number;
  rss0KiB: number; rss1KiB: number; fds0: number; fds1: number; secs: number; setupCpuUsPerConn: number; foreignPct: number;
  errorCodes: Record<string, number>;
}

interface Summary {
  row: string; n: number; clean: boolean; rps: number; min: number; max: number; p50: number; p99: number; cost: number; sys: number;
  cpuPct: number; errors: number; foreignMax: number; steal: number; headers: string; resumed: string; note: string;
}

/** What the driver hands to {@link report}. */
export interface ReportInput {
  o: { reps: number; dur: number; idleReps: number; foreignMax: number };
  facts: Record<string, unknown>;
  cmd: string;
  running: { row: Row; note: string; failed?: string }[];
  skipped: string[];
  samples: Sample[];
  idle: IdleSample[];
  idleRows: string[];
  idleFailed: Map<string, string>;
  n: number;
  /** The TLS suite: its loads and targets, no idle part; `negotiated`: each row's protocol and cipher. */
  tls?: { negotiated: Map<string, string> };
}

const pct = (a: number, b: number): string => (b > 0 ? `${fmt((100 * a) / b, 0)}` : '–');

function summarize(inp: ReportInput, load: Load['name']): Summary[] {
  return inp.running.map((rr) => {
    const mine = inp.samples.filter((s) => s.load === load && s.row === rr.row.name && s.kept && Number.isFinite(s.rps));
    const clean = mine.filter((s) => s.foreignPct <= inp.o.foreignMax);
    const good = clean.length > 0 ? clean : mine;
    const errors = mine.reduce((a, s) => a + s.non2xx + s.sockErrors, 0);
    const sum = (k: 'sampled' | 'withRequestId' | 'withForwardedFor'): number => good.reduce((a, s) => a + (s[k] || 0), 0);
    const notes = [
      rr.failed ?? '',
      errors > 0 ? `FLAGGED: ${mine.reduce((a, s) => a + s.non2xx, 0)} non-2xx, ${mine.reduce((a, s) => a + s.sockErrors, 0)} socket errors` : '',
      clean.length > 0 && clean.length < mine.length ? `${clean.length} of ${mine.length} runs clean, used those` : '',
      clean.length === 0 && mine.length > 0 ? 'no clean run (foreign CPU)' : '',
      rr.note,
    ];
    return {
      row: rr.row.name,
      n: good.length,
      clean: clean.length > 0,
      rps: median(good.map((s) => s.rps)),
      min: min(good.map((s) => s.rps)),
      max: max(good.map((s) => s.rps)),
      p50: median(good.map((s) => s.p50Ms)),
      p99: median(good.map((s) => s.p99Ms)),
      cost: median(good.map((s) => s.cpuUsPerReq)),
      sys: median(good.map((s) => s.sysUsPerReq)),
      cpuPct: median(good.map((s) => s.cpuPct)),
      errors,
      foreignMax: max(good.map((s) => s.foreignPct)),
      steal: median(good.map((s) => s.stealPct)),
      headers: `${pct(sum('withRequestId'), sum('sampled'))} / ${pct(sum('withForwardedFor'), sum('sampled'))}`,
      resumed: `${fmt(median(good.map((s) => s.clientResumedPct ?? Number.NaN)), 0)} / ${fmt(median(good.map((s) => s.serverResumedPct ?? Number.NaN)), 0)}`,
      note: notes.filter(Boolean).join('; '),
    };
  });
}

/** The fastest Node peer of a load's summaries (highest median), if any ran. */
function nodeBest(sums: Summary[]): Summary | undefined {
  return sums.filter((s) => NODE_PEERS.includes(s.row) && s.n > 0).sort((a, b) => b.rps - a.rps)[0];
}

function loadTable(load: Load, sums: Summary[], inp: ReportInput): string {
  const hap = sums.find((s) => s.row === 'haproxy' && s.n > 0);
  const nb = nodeBest(sums);
  const unit = load.close ? 'conn/s' : 'req/s';
  const tls = inp.tls !== undefined;
  const headers = ['row', ` ${unit} median`, ' min–max', ' ÷ haproxy', ...(tls ? [' resumed % client / server'] : [` ÷ ${nb?.row ?? 'fastest Node'}`]), ' p50 ms', ' p99 ms', ' p99 ÷ haproxy', ' proxy CPU µs/req', ' of which kernel', ' proxy CPU %', ' errors', ' X-Request-Id / XFF at backend %', ' foreign max %', ' steal %', 'notes'];
  const rows = sums.map((s) => [
    s.row,
    fmt(s.rps, 0),
    `${fmt(s.min, 0)}–${fmt(s.max, 0)}`,
    fmt(ratio(s.rps, hap?.rps ?? Number.NaN), 2),
    tls ? s.resumed : fmt(ratio(s.rps, nb?.rps ?? Number.NaN), 2),
    fmt(s.p50, 2),
    fmt(s.p99, 2),
    fmt(ratio(s.p99, hap?.p99 ?? Number.NaN), 2),
    fmt(s.cost, 1),
    fmt(s.sys, 1),
    fmt(s.cpuPct, 0),
    String(s.errors),
    s.headers,
    fmt(s.foreignMax, 0),
    fmt(s.steal, 0),
    s.note,
  ]);
  const direct = sums.find((s) => s.row === 'direct' && s.n > 0);
  const fastest = sums.filter((s) => s.row !== 'direct' && s.n > 0).sort((a, b) => b.rps - a.rps)[0];
  const head = ratio(direct?.rps ?? Number.NaN, fastest?.rps ?? Number.NaN);
  const ceiling = !fastest || !direct
    ? ''
    : load.close
      ? `\ndirect / fastest proxy (${fastest.row}) = ${fmt(head, 2)}: not a ceiling here: direct makes the backend accept and close every connection, which the proxies spare it (they keep their upstream connections)\n`
      : `\ndirect / fastest proxy (${fastest.row}) = ${fmt(head, 2)}: ${head >= 1.5 ? 'the load side leaves the proxies room (>= 1.5)' : 'below 1.5: wrk + backend on CPU 0 also limit the fastest proxy rows, so their ratios are compressed toward 1; compare proxy CPU per request'}\n`;
  return `### ${load.name} — ${load.what}, ${inp.o.dur} s per run (${unit}, median of ${inp.o.reps} runs; ratios: row ÷ peer)\n\n${mdTable(headers, rows)}\n${ceiling}`;
}

function idleTable(inp: ReportInput): { text: string; sums: Map<string, number> } {
  const sums = new Map<string, number>();
  const rows = inp.idleRows.map((row) => {
    const mine = inp.idle.filter((s) => s.row === row);
    const ok = mine.filter((s) => s.verified);
    const med = (f: (s: IdleSample) => number): number => median(ok.map(f));
    sums.set(row, median(ok.map((s) => s.value)));
    const notes = [inp.idleFailed.get(row) ?? '', ok.length < mine.length ? `${mine.length - ok.length} of ${mine.length} runs not verified (${JSON.stringify(mine.find((s) => !s.verified)?.errorCodes ?? {})})` : ''];
    return [row, sums.get(row)!, ok, med, notes.filter(Boolean).join('; ')] as const;
  });
  const hap = sums.get('haproxy');
  const text = mdTable(
    ['row', ' KiB RSS/conn median', ' min–max', ' ÷ haproxy', ' conns held', ' RSS before MiB', ' RSS after MiB', ' proxy fds/conn', ' setup s', ' setup CPU µs/conn', 'notes'],
    rows.map(([row, v, ok, med, note]) => [
      row,
      fmt(v, 2),
      `${fmt(min(ok.map((s) => s.value)), 2)}–${fmt(max(ok.map((s) => s.value)), 2)}`,
      fmt(ratio(v, hap ?? Number.NaN), 2),
      fmt(med((s) => s.open), 0),
      fmt(med((s) => s.rss0KiB / 1024), 1),
      fmt(med((s) => s.rss1KiB / 1024), 1),
      fmt(med((s) => (s.fds1 - s.fds0) / s.open), 2),
      fmt(med((s) => s.secs), 1),
      fmt(med((s) => s.setupCpuUsPerConn), 0),
      note,
    ]),
  );
  return { text: `### idle — ${fmt(inp.n, 0)} idle keep-alive client connections after one request each, fresh proxy, RSS growth per connection (KiB, median of ${inp.o.idleReps} runs; lower is better)\n\n${text}\n`, sums };
}

function targetLines(inp: ReportInput, all: Map<Load['name'], Summary[]>, idle: Map<string, number>): string[] {
  const out: string[] = [];
  for (const t of inp.tls ? TLS_TARGETS : HTTP_TARGETS) {
    const sums = all.get(t.load) ?? [];
    const a = sums.find((s) => s.row === t.a && s.n > 0);
    const b = t.b === 'node-best' ? nodeBest(sums) : sums.find((s) => s.row === t.b && s.n > 0);
    const fig = (s: Summary | undefined): number => (t.figure === 'rps' ? (s?.rps ?? Number.NaN) : (s?.p99 ?? Number.NaN));
    const v = ratio(fig(a), fig(b));
    const perRep: number[] = [];
    for (let rep = 1; rep <= inp.o.reps; rep++) {
      const at = (row: string | undefined): Sample | undefined => inp.samples.find((s) => s.load === t.load && s.row === row && s.rep === rep && s.kept && s.foreignPct <= inp.o.foreignMax);
      const x = at(a?.row);
      const y = at(b?.row);
      if (x && y) perRep.push(t.figure === 'rps' ? ratio(x.rps, y.rps) : ratio(x.p99Ms, y.p99Ms));
    }
    const flagged = [a, b].filter((s) => s && s.errors > 0).map((s) => s!.row);
    // A ratio to a row measured only while other tenants took the CPU says nothing either way.
    const disturbed = [a, b].filter((s) => s && !s.clean).map((s) => s!.row);
    // Failed requests fail the target whatever the ratio (a p99 of few answers means nothing).
    const res = !Number.isFinite(v)
      ? 'NOT MEASURED'
      : disturbed.length > 0
        ? `NOT MEASURED (no clean run of ${disturbed.join(', ')})`
        : (t.atLeast ? v >= t.limit : v <= t.limit) && !flagged.includes(t.a) ? 'PASS' : 'FAIL';
    // TLS: what the ratio would be if both were bound by their own CPU (the load side may bind either).
    const bound = [a, b].every((s) => s && s.cpuPct < 85) ? ` [load side bound: proxy CPU ${fmt(a!.cpuPct, 0)} % / ${fmt(b!.cpuPct, 0)} %]` : '';
    const byCpu = inp.tls && t.figure === 'rps' ? `; by proxy CPU per ${t.load === 'c50' ? 'request' : 'connection'}: ${fmt(ratio(b?.cost ?? Number.NaN, a?.cost ?? Number.NaN), 2)}${bound}` : '';
    out.push(
      `${t.text}${t.b === 'node-best' && b ? ` (${b.row})` : ''} = ${fmt(v, 2)}${byCpu} (target ${t.atLeast ? '>=' : '<='} ${t.limit}${t.goal && Number.isFinite(v) ? `, goal ${t.goal}: ${v >= t.goal ? 'met' : 'not met'}` : t.goal ? `, goal ${t.goal}` : ''}) ${res}` +
        `${perRep.length ? `  (per rep: ${perRep.map((x) => fmt(x, 2)).join(' ')})` : ''}${flagged.length ? `  [rows with errors: ${flagged.join(', ')}]` : ''}`,
    );
  }
  if (inp.tls) return [...out, ...TLS_NOT_MEASURED];
  const kib = idle.get('gatehouse-w1') ?? Number.NaN;
  out.push(`idle gatehouse-w1 KiB RSS per connection = ${fmt(kib, 2)} (target <= ${IDLE_TARGET_KIB}) ${!Number.isFinite(kib) ? 'NOT MEASURED' : kib <= IDLE_TARGET_KIB ? 'PASS' : 'FAIL'}`);
  return out;
}

/** The suite's markdown report: facts, one table per load, the idle table and the target lines. */
export function report(inp: ReportInput): string {
  const f = inp.facts;
  const loads = inp.tls ? TLS_LOADS : LOADS;
  const all = new Map(loads.map((l) => [l.name, summarize(inp, l.name)] as const));
  const idle = inp.tls ? { text: '', sums: new Map<string, number>() } : idleTable(inp);
  const tg = targetLines(inp, all, idle.sums);
  const el = Number(f.elapsedS);
  const neg = inp.tls ? [...inp.tls.negotiated].map(([r, v]) => `${r} ${v}`).join('; ') : '';
  return [
    `## Gatehouse ${inp.tls ? 'TLS' : 'HTTP'} bench ${String(f.date)}`,
    '',
    `\`${inp.cmd}\`, ${Math.floor(el / 60)} min ${Math.round(el % 60)} s.`,
    '',
    `Machine: ${String(f.nproc)} CPUs, kernel ${String(f.kernel)}, Node ${String(f.node)}, ${String(f.haproxy ?? 'no haproxy')}, ${String(f.nginx ?? 'no nginx')}, ${String(f.wrk ?? 'wrk ?')}; ` +
      `pinning ${String(f.pin)}; git ${String(f.git)}${Number(f.gitDirtySrc) > 0 ? ` (+${String(f.gitDirtySrc)} uncommitted files in src/)` : ''}. ` +
      (inp.tls ? `${String(f.openssl)}; certificate EC P-256 self-signed; negotiated: ${neg}.` : `Idle: ${String(f.idle)}.`),
    inp.skipped.length ? `\nSkipped rows: ${inp.skipped.join('; ')}.` : '',
    '',
    ...loads.map((l) => loadTable(l, all.get(l.name)!, inp)),
    idle.text,
    '```',
    `${inp.tls ? 'TLS' : 'HTTP'} targets (ratios of medians measured in this run; gatehouse-w1 unless named):`,
    ...tg.map((x) => `  ${x}`),
    '```',
    '',
  ].join('\n');
}
