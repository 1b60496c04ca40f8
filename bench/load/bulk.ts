/**
 * Bulk load generator: STREAMS parallel connections each upload MIB MiB (1 MiB writes with
 * backpressure), half-close, and wait for the sink's byte count, which must equal what was sent.
 * DIR=down: each stream asks the sink for MIB MiB instead (`DOWN <bytes>\n`, half-close) and
 * reads them to EOF; the count read must equal the count asked for (the download direction, where
 * a proxy reads from its backend socket).
 * Bounded in count (MIB writes per stream) and time (TIMEOUT_S for the whole run).
 * usage: node bench/load/bulk.ts PORT STREAMS MIB [TIMEOUT_S] [DIR]   (DIR: up, the default, or down)
 * prints one JSON line: { ok, bytes, secs, mbps, errors, clientCpuS }   (MB/s = 10^6 bytes/s)
 */
import net from 'node:net';
import { exitWithParent, intArg, report } from '../lib/child.ts';

const USAGE = 'node bench/load/bulk.ts PORT STREAMS MIB [TIMEOUT_S] [DIR]';
const port = intArg(process.argv[2], 'PORT', USAGE);
const streams = Math.max(1, intArg(process.argv[3], 'STREAMS', USAGE));
const mib = Math.max(1, intArg(process.argv[4], 'MIB', USAGE));
const timeoutS = Math.max(1, intArg(process.argv[5] ?? '120', 'TIMEOUT_S', USAGE));
const dir = process.argv[6] ?? 'up';
if (dir !== 'up' && dir !== 'down') {
  process.stderr.write(`bad DIR ${dir}\nusage: ${USAGE}\n`);
  process.exit(2);
}
exitWithParent();

const chunk = Buffer.alloc(1 << 20, 0x61);
const perStream = mib * (1 << 20);
const errors: string[] = [];
const cpu0 = process.cpuUsage();
const t0 = performance.now();

/** Downloads perStream bytes: asks the sink, half-closes, counts to EOF. */
function download(): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port, noDelay: true });
    let got = 0;
    let settled = false;
    const done = (ok: boolean, why?: string): void => {
      if (settled) return;
      settled = true;
      if (why) errors.push(why);
      s.destroy();
      resolve(ok);
    };
    s.once('connect', () => s.end(`DOWN ${perStream}\n`));
    s.on('data', (d: Buffer) => {
      got += d.length;
    });
    s.once('end', () => done(got === perStream, got === perStream ? undefined : `got ${got} of ${perStream} bytes`));
    s.on('error', (err: NodeJS.ErrnoException) => done(false, err.code ?? err.message));
    s.once('close', () => done(false, 'closed before EOF'));
  });
}

function stream(): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port, noDelay: true });
    let reply = '';
    let sent = 0;
    let settled = false;
    const done = (ok: boolean, why?: string): void => {
      if (settled) return;
      settled = true;
      if (why) errors.push(why);
      s.destroy();
      resolve(ok);
    };
    s.setEncoding('latin1');
    const pump = (): void => {
      while (sent < mib) {
        sent++;
        if (!s.write(chunk)) {
          s.once('drain', pump);
          return;
        }
      }
      s.end();
    };
    s.once('connect', pump);
    s.on('data', (d: string) => {
      reply += d;
      if (reply.length > 32) done(false, 'reply too long');
    });
    s.once('end', () => done(reply === `${perStream}\n`, reply === `${perStream}\n` ? undefined : `bad reply ${JSON.stringify(reply)}`));
    s.on('error', (err: NodeJS.ErrnoException) => done(false, err.code ?? err.message));
    s.once('close', () => done(false, 'closed before reply'));
  });
}

const watchdog = setTimeout(() => {
  report({ ok: false, bytes: 0, secs: timeoutS, mbps: 0, errors: ['timeout'], clientCpuS: Number.NaN });
  process.exit(0);
}, timeoutS * 1000);

const results = await Promise.all(Array.from({ length: streams }, dir === 'down' ? download : stream));
clearTimeout(watchdog);
const secs = (performance.now() - t0) / 1000;
const bytes = perStream * streams;
const cpu = process.cpuUsage(cpu0);
report({ ok: results.every(Boolean), bytes, secs, mbps: bytes / secs / 1e6, errors, clientCpuS: (cpu.user + cpu.system) / 1e6 });
process.exit(0);
