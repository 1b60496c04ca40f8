/**
 * Helpers of the TLS suite (`npm run bench -- --suite tls`, bench/http.ts --tls): the run's
 * certificate, the protocol and cipher a row negotiates, the `openssl s_time` handshake loads, and
 * the handshake counters of the rows that export them (Gatehouse's metrics, HAProxy's stats socket).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import type { Procs } from './procs.ts';
import type { TlsFiles } from '../peers/http-configs.ts';

/**
 * Writes an EC P-256 self-signed certificate (CN and SAN `bench.example`, SAN IP 127.0.0.1), its
 * key, and both in one file, into the paths of `files`.
 * @example makeBenchCert(tlsFiles(outDir))
 */
export function makeBenchCert(files: TlsFiles): void {
  mkdirSync(path.dirname(files.cert), { recursive: true });
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '7',
    '-keyout', files.key, '-out', files.cert, '-subj', '/CN=bench.example', '-addext', 'subjectAltName=DNS:bench.example,IP:127.0.0.1',
  ], { stdio: 'pipe', timeout: 30_000 });
  writeFileSync(files.pem, `${readFileSync(files.cert, 'utf8')}${readFileSync(files.key, 'utf8')}`);
}

/** `TLSv1.3 TLS_AES_256_GCM_SHA384` as `openssl s_client` (OpenSSL's defaults) negotiates with 127.0.0.1:port; else what failed. */
export function negotiated(port: number): string {
  const r = spawnSync('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-brief'], { input: '', encoding: 'utf8', timeout: 10_000 });
  const text = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  const v = /Protocol version: (\S+)/.exec(text)?.[1];
  const c = /Ciphersuite: (\S+)/.exec(text)?.[1];
  return v && c ? `${v} ${c}` : `s_client failed: ${(r.error?.message ?? text).split('\n')[0]}`;
}

/** What `n` parallel `s_time` processes did: connections, their summed rate, how many resumed, failed processes. */
export interface STimeResult { conns: number; rate: number; resumed: number; full: number; failed: number; out: string }

/**
 * Runs `n` parallel `openssl s_time -connect 127.0.0.1:port -new|-reuse -www / -time durS` (pinned
 * to `cpus`) and sums their connections per second, each over its own wall-clock time (s_time's
 * own "real seconds" is whole seconds). s_time prints one character per connection: `r` for a
 * resumed session. `-www /` makes it read the answer, and with it the TLS 1.3 session tickets:
 * without a read, `-reuse` never has a ticket to resume.
 */
export async function sTime(procs: Procs, tag: string, port: number, mode: 'new' | 'reuse', n: number, durS: number, cpus: string | undefined): Promise<STimeResult> {
  const runs = Array.from({ length: n }, async (_, i) => {
    const t0 = performance.now();
    const c = procs.spawn(`load/${tag}-p${i}`, 'openssl', ['s_time', '-connect', `127.0.0.1:${port}`, `-${mode}`, '-www', '/', '-time', String(durS)], { cpus, keepLines: 50 });
    const timer = setTimeout(() => void c.stop(2_000), durS * 1000 + 20_000);
    const exit = await c.exited;
    clearTimeout(timer);
    const secs = (performance.now() - t0) / 1000;
    const out = c.lines.join('\n');
    const conns = Number(/(\d+) connections in [\d.]+s;/.exec(out)?.[1] ?? Number.NaN);
    const marks = c.lines.filter((l) => /^[*r]+$/.test(l.trim())).join('');
    return { conns, secs, resumed: (marks.match(/r/g) ?? []).length, full: (marks.match(/\*/g) ?? []).length, ok: exit.code === 0 && Number.isFinite(conns), out };
  });
  const all = await Promise.all(runs);
  const good = all.filter((r) => r.ok);
  return {
    conns: good.reduce((a, r) => a + r.conns, 0),
    rate: good.length ? good.reduce((a, r) => a + r.conns / r.secs, 0) : Number.NaN,
    resumed: good.reduce((a, r) => a + r.resumed, 0),
    full: good.reduce((a, r) => a + r.full, 0),
    failed: all.length - good.length,
    out: all.find((r) => !r.ok)?.out ?? all[0]?.out ?? '',
  };
}

/** Handshakes a proxy counted: full (new sessions) and resumed. */
export interface Handshakes { full: number; resumed: number }

function get(port: number, p: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: p, agent: false, timeout: 3_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve(res.statusCode === 200 ? body : undefined));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(undefined));
  });
}

/** The admin port Gatehouse logged (`admin listening`) in its log file, if any. */
export function gatehouseAdminPort(logFile: string): number | undefined {
  try {
    const line = readFileSync(logFile, 'utf8').split('\n').find((l) => l.includes('"admin listening"'));
    const port = line ? Number((JSON.parse(line) as { address?: { port?: number } }).address?.port) : Number.NaN;
    return Number.isFinite(port) ? port : undefined;
  } catch {
    return undefined;
  }
}

/** Gatehouse's `gatehouse_tls_handshakes_total` (all listeners): ok minus resumed is full. Bounded. */
export async function gatehouseHandshakes(adminPort: number): Promise<Handshakes | undefined> {
  const body = await get(adminPort, '/metrics');
  if (!body) return undefined;
  const sum = (result: string): number =>
    body.split('\n').filter((l) => l.startsWith('gatehouse_tls_handshakes_total{') && l.includes(`result="${result}"`)).reduce((a, l) => a + Number(l.split(' ').pop()), 0);
  const ok = sum('ok');
  const resumed = sum('resumed');
  return { full: ok - resumed, resumed };
}

/** HAProxy's frontend SSL counters (`show stat` typed: ssl_sess, ssl_reused_sess) from its stats socket. Bounded. */
export function haproxyHandshakes(socketPath: string): Promise<Handshakes | undefined> {
  return new Promise((resolve) => {
    const s = net.connect(socketPath);
    let buf = '';
    const t = setTimeout(() => s.destroy(), 3_000);
    s.setEncoding('utf8');
    s.on('connect', () => s.write('show stat -1 1 -1 typed\n'));
    s.on('data', (d: string) => (buf += d));
    s.on('error', () => {});
    s.once('close', () => {
      clearTimeout(t);
      const val = (name: string): number =>
        buf.split('\n').filter((l) => l.startsWith('F.') && l.includes(`.${name}.`)).reduce((a, l) => a + Number(l.split(':').pop()), 0);
      const full = val('ssl_sess');
      const resumed = val('ssl_reused_sess');
      resolve(buf.includes('ssl_sess') ? { full, resumed } : undefined);
    });
  });
}
