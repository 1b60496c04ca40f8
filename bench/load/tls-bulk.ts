/**
 * TLS bulk load generator (the TLS suite's bulk part, bench/tls-bulk.ts): STREAMS parallel TLS
 * connections (TLS 1.3, verified against CA_FILE for `bench.example`) each upload MIB MiB in
 * 1 MiB writes with backpressure, half-close, and wait for the sink's byte count ("<bytes>\n",
 * bench/backends/tcp-sink.ts behind a TLS-terminating proxy, or bench/backends/tls-sink.ts
 * directly), which must equal what was sent. Several of these processes run at once: one Node
 * process encrypts on one core.
 * Bounded in count (MIB writes per stream) and time (TIMEOUT_S for the whole run).
 * usage: node bench/load/tls-bulk.ts PORT STREAMS MIB TIMEOUT_S CA_FILE
 * prints one JSON line: { ok, bytes, secs, mbps, errors, clientCpuS, protocol, cipher }
 */
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { exitWithParent, intArg, report } from '../lib/child.ts';

const USAGE = 'node bench/load/tls-bulk.ts PORT STREAMS MIB TIMEOUT_S CA_FILE';
const port = intArg(process.argv[2], 'PORT', USAGE);
const streams = Math.max(1, intArg(process.argv[3], 'STREAMS', USAGE));
const mib = Math.max(1, intArg(process.argv[4], 'MIB', USAGE));
const timeoutS = Math.max(1, intArg(process.argv[5], 'TIMEOUT_S', USAGE));
const ca = readFileSync(process.argv[6] ?? '', 'utf8');
exitWithParent();

const chunk = Buffer.alloc(1 << 20, 0x61);
const perStream = mib * (1 << 20);
const errors: string[] = [];
let protocol = '';
let cipher = '';
const cpu0 = process.cpuUsage();
const t0 = performance.now();

function stream(): Promise<boolean> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, ca, servername: 'bench.example', minVersion: 'TLSv1.3', allowHalfOpen: true } as tls.ConnectionOptions);
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
    s.setNoDelay(true);
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
    s.once('secureConnect', () => {
      protocol = s.getProtocol() ?? '';
      cipher = s.getCipher()?.name ?? '';
      pump();
    });
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

const results = await Promise.all(Array.from({ length: streams }, stream));
clearTimeout(watchdog);
const secs = (performance.now() - t0) / 1000;
const bytes = perStream * streams;
const cpu = process.cpuUsage(cpu0);
report({ ok: results.every(Boolean), bytes, secs, mbps: bytes / secs / 1e6, errors, clientCpuS: (cpu.user + cpu.system) / 1e6, protocol, cipher });
process.exit(0);
