/**
 * Where a proxy's bytes per idle connection go: runs one row (pinned as bench/run.ts does) with
 * N idle connections from bench/load/idle.ts (each confirmed at bench/backends/idle-backend.ts),
 * and reports the process's RSS growth per connection as the bench measures it (2 s after the
 * last one), its drift over --watch seconds, and after a full GC. For Node rows (node-pipe,
 * gatehouse-*), bench/tools/mem-probe.ts is preloaded into every thread: per thread, JS heap,
 * external and ArrayBuffer bytes per connection before/after, heap spaces, libuv handles, and with
 * --snapshot the heap-snapshot difference by constructor in bytes per connection.
 *   node bench/tools/idle-mem.ts --row gatehouse-w1 [--conns 9000] [--settle 2] [--watch 10] [--snapshot]
 *   env: GATEHOUSE_ALT as for npm run bench; EXTRA_NODE_OPTIONS (e.g. --max-semi-space-size=1) for the row's node
 * Output: markdown on stdout; files in bench/out/idle-mem-<row>-<time>/.
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { Procs, freePort, waitPort } from '../lib/procs.ts';
import { nofileLimits, treeRssKiB } from '../lib/cpu.ts';
import { ROWS, onPath } from '../rows.ts';
import { aggregate, diff } from './heapsnapshot-diff.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BENCH = path.resolve(HERE, '..');
const REPO = path.resolve(BENCH, '..');
const NODE = process.execPath;

const { values } = parseArgs({
  options: {
    row: { type: 'string' },
    conns: { type: 'string', default: '9000' },
    settle: { type: 'string', default: '2' },
    watch: { type: 'string', default: '10' },
    snapshot: { type: 'boolean', default: false },
    top: { type: 'string', default: '25' },
  },
});
const row = ROWS.find((r) => r.name === values.row);
if (!row?.launch) {
  process.stderr.write(`usage: node bench/tools/idle-mem.ts --row ${ROWS.filter((r) => r.launch).map((r) => r.name).join('|')} [--conns N] [--settle S] [--watch S] [--snapshot]\n`);
  process.exit(2);
}
const n = Number(values.conns);
const pinned = onPath('taskset') && (process.env.PIN ?? 'split') === 'split';
const [loadCpus, proxyCpus] = pinned ? ['0', '1'] : [undefined, undefined];
const stamp = new Date().toISOString().replace(/[:]/g, '').replace(/\..*/, '');
const out = path.join(BENCH, 'out', `idle-mem-${row.name}-${stamp}`);
const probeDir = path.join(out, 'probe');
mkdirSync(probeDir, { recursive: true });
const { hard } = nofileLimits();
const procs = new Procs(out, { nofile: Number.isFinite(hard) ? hard : undefined, prlimit: onPath('prlimit') });
const isNode = !['haproxy', 'nginx'].includes(row.name);

function counts(ctl: number): Promise<{ confirmed: number } | undefined> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port: ctl });
    let b = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (b += d));
    s.on('error', () => resolve(undefined));
    s.once('close', () => {
      try {
        resolve(JSON.parse(b) as { confirmed: number });
      } catch {
        resolve(undefined);
      }
    });
  });
}

let seq = 0;
interface ProbeOut {
  threadId: number;
  main: boolean;
  before: NodeJS.MemoryUsage;
  mu: NodeJS.MemoryUsage;
  spaces: Record<string, { size: number; used: number }>;
  resources: Record<string, number>;
}
/** Asks every thread for its numbers (and a GC / snapshot); waits until the answers stop coming. */
async function probe(label: string, gc: boolean, snapshot: boolean): Promise<ProbeOut[]> {
  if (!isNode) return [];
  writeFileSync(path.join(probeDir, `cmd-${String(++seq).padStart(4, '0')}.json`), JSON.stringify({ label, gc, snapshot }));
  let last = -1;
  for (let i = 0; i < 600; i++) {
    await sleep(snapshot ? 1_000 : 300);
    const files = readdirSync(probeDir).filter((f) => f.startsWith(`${label}-t`) && f.endsWith('.json'));
    if (files.length > 0 && files.length === last) break;
    last = files.length;
  }
  return readdirSync(probeDir)
    .filter((f) => f.startsWith(`${label}-t`) && f.endsWith('.json'))
    .map((f) => JSON.parse(readFileSync(path.join(probeDir, f), 'utf8')) as ProbeOut)
    .sort((a, b) => a.threadId - b.threadId);
}

const kib = (b: number): string => (b / 1024).toFixed(2);

async function main(): Promise<void> {
  const backend = procs.spawn('idle-backend', NODE, [path.join(BENCH, 'backends/idle-backend.ts'), '0'], { cpus: loadCpus, keepLines: 5 });
  const br = JSON.parse(await backend.waitLine(/"ready":true/, 15_000)) as { port: number; ctlPort: number };
  const port = await freePort();
  const l = row!.launch!({ listenPort: port, upHost: '127.0.0.1', upPort: br.port, dir: out, peerThreads: 1, node: NODE, repo: REPO });
  const env: Record<string, string> = isNode
    ? { NODE_OPTIONS: `--expose-gc --import=${path.join(HERE, 'mem-probe.ts')} ${process.env.EXTRA_NODE_OPTIONS ?? ''}`.trim(), MEM_PROBE_DIR: probeDir }
    : {};
  const child = procs.spawn(`row-${row!.name}`, l.cmd, l.args, { cpus: proxyCpus, env });
  if (l.readyLine) await child.waitLine(l.readyLine, 30_000);
  await waitPort(port, 30_000, child);
  await sleep(1_500);
  const pid = child.pid;
  const rss0 = treeRssKiB(pid);
  const base = await probe('base', true, false);
  const rss0gc = treeRssKiB(pid);
  // A snapshot costs memory of its own: RSS readings are taken before it, never after.
  if (values.snapshot) await probe('base-snap', false, true);
  const rss0snap = treeRssKiB(pid);
  const client = procs.spawn('idle-client', NODE, [path.join(BENCH, 'load/idle.ts'), String(port), String(n), '600', '60'], { cpus: loadCpus, keepLines: 20 });
  const r = JSON.parse(await client.waitLine(/"phase":"ready"/, 80_000)) as { ready: number; secs: number };
  for (let i = 0; i < 100; i++) {
    const c = await counts(br.ctlPort);
    if (c && c.confirmed >= r.ready) break;
    await sleep(200);
  }
  const atReady = treeRssKiB(pid);
  // The bench's baseline is the idle process as started; here the snapshot (if any) raised it.
  const rss0b = rss0snap;
  await sleep(Number(values.settle) * 1000);
  const rss1 = treeRssKiB(pid);
  const c1 = await counts(br.ctlPort);
  const held = Math.min(r.ready, c1?.confirmed ?? 0);
  const drift: string[] = [];
  for (let t = 1; t <= Number(values.watch); t++) {
    await sleep(1_000);
    drift.push(`${Number(values.settle) + t}s ${kib((treeRssKiB(pid) - rss0b) * 1024 / held)}`);
  }
  const nogc = await probe('loaded-nogc', false, false);
  const loaded = await probe('loaded', true, false);
  const rss1gc = treeRssKiB(pid);
  if (values.snapshot) await probe('loaded-snap', false, true);

  const lines: string[] = [];
  const p = (s = ''): void => {
    lines.push(s);
  };
  p(`## idle-mem ${row!.name}: ${held} connections held (confirmed at the backend), setup ${r.secs.toFixed(1)} s`);
  p();
  p(`RSS (KiB per connection, growth over the idle proxy): at ready ${kib((atReady - rss0b) * 1024 / held)}, ` +
    `after ${values.settle} s (the bench's figure) **${kib((rss1 - rss0b) * 1024 / held)}**; drift: ${drift.join(', ')}; ` +
    (isNode ? `after a full GC in every thread (baseline also GC'd) **${kib((rss1gc - rss0gc) * 1024 / held)}**.` : '(no GC: not a Node row).'));
  p(`RSS MiB: idle ${(rss0 / 1024).toFixed(1)} (after GC ${(rss0gc / 1024).toFixed(1)}${values.snapshot ? `, after the snapshot ${(rss0snap / 1024).toFixed(1)}` : ''}), loaded ${(rss1 / 1024).toFixed(1)} (after GC ${(rss1gc / 1024).toFixed(1)}).`);
  if (isNode) {
    p();
    p('Per thread, bytes per connection (loaded minus idle, both after a full GC; "no GC" = loaded before that GC):');
    p();
    p('| thread | heapUsed | heapTotal | heapTotal no GC | new space size no GC | old space used | external | arrayBuffers | libuv resources loaded |');
    p('|---|---:|---:|---:|---:|---:|---:|---:|---|');
    for (const a of loaded) {
      const b = base.find((x) => x.threadId === a.threadId);
      const ng = nogc.find((x) => x.threadId === a.threadId);
      if (!b || !ng) continue;
      const d = (f: (x: ProbeOut) => number, x = a): string => ((f(x) - f(b)) / held).toFixed(0);
      p(
        `| ${a.threadId}${a.main ? ' (main)' : ''} | ${d((x) => x.mu.heapUsed)} | ${d((x) => x.mu.heapTotal)} | ${d((x) => x.before.heapTotal, ng)} | ` +
          `${d((x) => x.spaces.new_space?.size ?? 0, ng)} | ${d((x) => x.spaces.old_space?.used ?? 0)} | ${d((x) => x.mu.external)} | ${d((x) => x.mu.arrayBuffers)} | ` +
          `${Object.entries(a.resources).map(([k, v]) => `${k} ${v}`).join(', ')} |`,
      );
    }
    const usedAll = loaded.reduce((s, a) => s + a.mu.heapUsed, 0) - base.reduce((s, a) => s + a.mu.heapUsed, 0);
    p();
    p(`After GC: live JS heap (all threads' heapUsed growth) ${kib(usedAll / held)} KiB per connection; the rest of the RSS growth, ` +
      `${kib((rss1gc - rss0gc) * 1024 / held - usedAll / held)} KiB, is heap pages not given back (fragmentation, young generation kept) ` +
      'plus native memory: libuv handles, the C++ TCPWrap/stream objects, malloc arenas, V8 external memory.');
    if (values.snapshot) {
      for (const a of loaded) {
        const before = path.join(probeDir, `base-snap-t${a.threadId}.heapsnapshot`);
        const after = path.join(probeDir, `loaded-snap-t${a.threadId}.heapsnapshot`);
        const rows = diff(aggregate(after), aggregate(before));
        const total = rows.reduce((s, x) => s + x.size, 0);
        p();
        p(`Heap snapshot, thread ${a.threadId}${a.main ? ' (main)' : ''}: live JS objects per connection, ${(total / held).toFixed(0)} B in all`);
        p();
        p('| what | count/conn | bytes/conn |');
        p('|---|---:|---:|');
        for (const x of rows.slice(0, Number(values.top))) if (Math.abs(x.size / held) >= 1) p(`| ${x.key} | ${(x.count / held).toFixed(2)} | ${(x.size / held).toFixed(0)} |`);
      }
    }
  }
  const text = `${lines.join('\n')}\n`;
  writeFileSync(path.join(out, 'report.md'), text);
  process.stdout.write(text);
  await client.stop(3_000);
  await child.stop(10_000);
  await backend.stop(3_000);
}

main().then(
  () => procs.stopAll(3_000).then(() => process.exit(0)),
  async (err: unknown) => {
    process.stderr.write(`${(err as Error).stack}\n`);
    await procs.stopAll(3_000);
    process.exit(1);
  },
);
