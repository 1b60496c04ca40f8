/**
 * Load of the cluster-broadcast suite (bench/cluster-broadcast.ts): the publisher and every client,
 * in one process (pinned apart from the servers), so that send and receive times are read on one
 * clock (`performance.now()`) and a closed loop knows at once when a broadcast reached everyone.
 *
 * - `gatehouse`: listens as the hub node on NODE_PORT (instance A dials it) and broadcasts
 *   `{"type":"broadcast","data":…}` on that stream; clients connect with a JWT (one user each) and
 *   get `{"type":"message","from":"n1","data":…}`.
 * - `socketio`: the publisher is a Socket.IO client of server A's namespace `/node` that emits
 *   `broadcast` events (the server calls `io.emit`); clients speak engine.io v4 / socket.io v5 over
 *   raw `ws` (`/socket.io/?EIO=4&transport=websocket`, `40` to join `/`, ping `2` answered `3`)
 *   and get `42["message",…]`.
 *
 * Both use the same `ws` client, and read only the `s` (sequence) and `t` (send time, µs) fields
 * of a frame (no JSON.parse), so the client side costs the same for both.
 *
 * Phases, after the driver writes `go` on stdin (its servers are up):
 * 1. connect CLIENTS clients to each of PORT_A and PORT_B (100 at a time, retried);
 * 2. probe: one broadcast every 100 ms until one reached every client (cross-instance delivery is
 *    on), then 1 s of warm-up at RATE;
 * 3. `fixed`: RATE broadcasts/s for DUR s (open loop, on a schedule);
 * 4. `sat`: a closed loop with WINDOW broadcasts in flight (a new one as soon as one reached every
 *    client) for DUR s: the highest rate the servers sustain, with queues bounded by WINDOW.
 * Each phase prints {"phase":"NAME-start"} and {"phase":"NAME-end"} around its sending window (the
 * driver reads the servers' CPU there), then waits (bounded) for the stragglers. Deliveries/s is
 * what the clients received within the window ÷ DUR; latency is receive time − send time of every
 * delivery of the phase's broadcasts; what never arrived within DRAIN_MS counts as lost.
 *
 * usage: node bench/load/broadcast-load.ts gatehouse|socketio PORT_A PORT_B NODE_PORT CLIENTS RATE DUR WINDOW SECRET
 * prints {"loadReady":true} (node listening), the phase lines, then one JSON result line.
 */
import { SignJWT } from 'jose';
import { WebSocket, WebSocketServer } from 'ws';
import { exitWithParent, intArg, report } from '../lib/child.ts';

const USAGE = 'node bench/load/broadcast-load.ts gatehouse|socketio PORT_A PORT_B NODE_PORT CLIENTS RATE DUR WINDOW SECRET';
const [, , mode, pa, pb, np, nc, rt, du, wn, secret] = process.argv;
const portA = intArg(pa, 'PORT_A', USAGE);
const portB = intArg(pb, 'PORT_B', USAGE);
const nodePort = intArg(np, 'NODE_PORT', USAGE);
const perInstance = Math.max(1, Math.min(10_000, intArg(nc, 'CLIENTS', USAGE)));
const rate = Number(rt);
const dur = Number(du);
const window = Math.max(1, Math.min(1_000, intArg(wn, 'WINDOW', USAGE)));
if ((mode !== 'gatehouse' && mode !== 'socketio') || !(rate > 0 && rate <= 10_000) || !(dur > 0 && dur <= 120) || !secret) {
  process.stderr.write(`usage: ${USAGE}\n`);
  process.exit(2);
}
exitWithParent();

const TOTAL = 2 * perInstance;
const MAX_SEQ = 1_000_000;
const MAX_LAT = 8_000_000;
const DRAIN_MS = 15_000;
const PHASE_MS = 120_000;
const PAD = 'x'.repeat(60);
const S_KEY = Buffer.from('"s":');
const T_KEY = Buffer.from(',"t":');

function deadline<T>(p: Promise<T>, what: string, ms = PHASE_MS): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, rej) => (timer = setTimeout(() => rej(new Error(`${what}: not within ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
}
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const nowUs = (): number => Math.round(performance.now() * 1000);

/** The unsigned integer written after `key` in `b` (-1 if absent). */
function intAfter(b: Buffer, key: Buffer, from = 0): number {
  let i = b.indexOf(key, from);
  if (i < 0) return -1;
  i += key.length;
  let n = 0;
  for (let c = b[i]!; c >= 48 && c <= 57; c = b[++i]!) n = n * 10 + (c - 48);
  return n;
}

// --- delivery accounting ----------------------------------------------------------------------
const count = new Uint16Array(MAX_SEQ);
let sent = 0;
let completed = 0;
/** The phase being recorded: its first sequence number, its latencies (µs), and whether its window is open. */
let phaseFirst = MAX_SEQ;
let lat = new Uint32Array(0);
let nLat = 0;
/** The same, of the clients of instance B alone (the remote instance: through Redis). */
let latB = new Uint32Array(0);
let nLatB = 0;
let inWindow = false;
let windowRecv = 0;
let closedLoop = false;
let outOfOrder = 0;

function received(c: Client, b: Buffer): void {
  const s = intAfter(b, S_KEY);
  const t = intAfter(b, T_KEY);
  if (s < 0 || s >= sent || t < 0) {
    c.junk++;
    return;
  }
  if (s <= c.last) {
    outOfOrder++;
    return;
  }
  c.last = s;
  if (s >= phaseFirst && nLat < lat.length) {
    const us = nowUs() - t;
    lat[nLat++] = us;
    if (c.remote && nLatB < latB.length) latB[nLatB++] = us;
  }
  if (inWindow) windowRecv++;
  if (++count[s] === TOTAL) {
    completed++;
    if (closedLoop) while (sent - completed < window && sent < MAX_SEQ) publish();
  }
}

// --- the publisher ------------------------------------------------------------------------------
let pubSocket: WebSocket | undefined;

function publish(): void {
  const data = `{"s":${sent++},"t":${nowUs()},"p":"${PAD}"}`;
  pubSocket!.send(mode === 'gatehouse' ? `{"type":"broadcast","data":${data}}` : `42/node,["broadcast",${data}]`);
}

async function startPublisher(): Promise<void> {
  if (mode === 'gatehouse') {
    await deadline(nodeHello, 'instance A dialling the node');
    return;
  }
  const ws = new WebSocket(`ws://127.0.0.1:${portA}/socket.io/?EIO=4&transport=websocket`, { perMessageDeflate: false });
  ws.on('error', () => {});
  await deadline(
    new Promise<void>((resolve, reject) => {
      ws.once('error', reject);
      ws.on('message', (raw: Buffer) => {
        const m = raw.toString();
        if (m.startsWith('0')) ws.send('40/node,');
        else if (m.startsWith('40/node,')) resolve();
        else if (m === '2') ws.send('3');
      });
    }),
    'the publisher joining /node',
  );
  pubSocket = ws;
}

let nodeUp!: () => void;
const nodeHello = new Promise<void>((r) => (nodeUp = r));
if (mode === 'gatehouse') {
  const node = new WebSocketServer({ host: '127.0.0.1', port: nodePort });
  node.on('connection', (ws) => {
    ws.on('error', () => {});
    ws.on('message', (raw: Buffer) => {
      if (pubSocket === undefined && raw.includes('"type":"hello"')) {
        pubSocket = ws;
        nodeUp();
      }
    });
  });
  await new Promise<void>((r) => node.once('listening', () => r()));
}

// --- the clients --------------------------------------------------------------------------------
interface Client {
  ws: WebSocket;
  /** A client of instance B (reached through Redis). */
  remote: boolean;
  last: number;
  junk: number;
}

async function token(user: string): Promise<string> {
  return new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(user).setIssuedAt().setExpirationTime('1h').sign(new TextEncoder().encode(secret));
}

async function connectClient(port: number, i: number): Promise<Client> {
  const url =
    mode === 'gatehouse' ? `ws://127.0.0.1:${port}/connect?token=${await token(`u${i}`)}` : `ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket`;
  for (let attempt = 0; ; attempt++) {
    try {
      return await new Promise<Client>((resolve, reject) => {
        const ws = new WebSocket(url, { perMessageDeflate: false, skipUTF8Validation: true });
        const c: Client = { ws, remote: port === portB, last: -1, junk: 0 };
        let joined = false;
        ws.on('error', reject);
        ws.on('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
        ws.on('close', () => reject(new Error('closed before it joined')));
        ws.on('message', (raw: Buffer) => {
          if (joined) {
            // Gatehouse: {"type":"message",…}; Socket.IO: 42["message",…] (a ping is "2").
            if (raw.length > 2) received(c, raw);
            else if (raw[0] === 50) ws.send('3');
            return;
          }
          const m = raw.toString();
          if (mode === 'gatehouse' ? m.includes('"type":"welcome"') : m.startsWith('40')) {
            joined = true;
            resolve(c);
          } else if (m.startsWith('0')) ws.send('40');
        });
      });
    } catch (err) {
      if (attempt >= 50) throw err;
      await sleep(100);
    }
  }
}

// --- phases --------------------------------------------------------------------------------------
interface Phase {
  broadcasts: number;
  deliveriesPerSec: number;
  offeredPerSec: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** p99 of instance B's clients alone. */
  p99RemoteMs: number;
  lost: number;
  drainMs: number;
  loadCpuPct: number;
}

async function drained(upTo: number, ms: number): Promise<number> {
  const t0 = performance.now();
  while (completed < upTo && performance.now() - t0 < ms) await sleep(5);
  return performance.now() - t0;
}

/** Runs one measured phase: `send` publishes for `dur` s while the window is open. */
async function phase(name: string, send: (until: number) => Promise<void>): Promise<Phase> {
  await drained(sent, DRAIN_MS);
  const first = sent;
  phaseFirst = first;
  lat = new Uint32Array(MAX_LAT);
  nLat = 0;
  latB = new Uint32Array(MAX_LAT / 2);
  nLatB = 0;
  windowRecv = 0;
  report({ phase: `${name}-start` });
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  inWindow = true;
  await send(t0 + dur * 1000);
  const secs = (performance.now() - t0) / 1000;
  inWindow = false;
  const cpu = process.cpuUsage(cpu0);
  report({ phase: `${name}-end` });
  const last = sent;
  const drainMs = await drained(last, DRAIN_MS);
  phaseFirst = MAX_SEQ;
  let got = 0;
  for (let s = first; s < last; s++) got += count[s]!;
  const l = lat.subarray(0, nLat).sort();
  const lb = latB.subarray(0, nLatB).sort();
  const q = (p: number, a = l): number => (a.length ? a[Math.min(a.length - 1, Math.floor(p * a.length))]! / 1000 : Number.NaN);
  const p99RemoteMs = q(0.99, lb);
  lat = new Uint32Array(0);
  latB = new Uint32Array(0);
  return {
    broadcasts: last - first,
    deliveriesPerSec: windowRecv / secs,
    offeredPerSec: ((last - first) * TOTAL) / secs,
    p50Ms: q(0.5),
    p99Ms: q(0.99),
    maxMs: l.length ? l[l.length - 1]! / 1000 : Number.NaN,
    p99RemoteMs,
    lost: (last - first) * TOTAL - got,
    drainMs,
    loadCpuPct: (100 * (cpu.user + cpu.system)) / 1e6 / secs,
  };
}

/** Open loop: `r` broadcasts/s on a schedule (late timers catch up; the send time is the real one). */
async function fixedRate(r: number, until: number): Promise<void> {
  const t0 = performance.now();
  for (let k = 0; sent < MAX_SEQ; k++) {
    const at = t0 + (k * 1000) / r;
    if (at >= until) break;
    const wait = at - performance.now();
    if (wait > 1) await sleep(wait);
    publish();
  }
  const rest = until - performance.now();
  if (rest > 0) await sleep(rest);
}

/** Closed loop: WINDOW broadcasts in flight until `until`. */
async function saturate(until: number): Promise<void> {
  closedLoop = true;
  while (sent - completed < window && sent < MAX_SEQ) publish();
  while (performance.now() < until) await sleep(Math.min(10, until - performance.now()));
  closedLoop = false;
}

const result: Record<string, unknown> = { mode, clients: TOTAL, rate, dur, window };
report({ loadReady: true });
try {
  await deadline(
    new Promise<void>((resolve) => {
      process.stdin.on('data', (d: Buffer) => {
        if (d.toString().includes('go')) resolve();
      });
    }),
    'the driver saying go',
  );
  await startPublisher();
  const clients: Client[] = [];
  const t0 = performance.now();
  for (const [port, base] of [
    [portA, 0],
    [portB, perInstance],
  ] as const) {
    for (let i = 0; i < perInstance; i += 100) {
      const n = Math.min(100, perInstance - i);
      clients.push(...(await deadline(Promise.all(Array.from({ length: n }, (_, k) => connectClient(port, base + i + k))), 'connecting clients')));
    }
  }
  result.connectSecs = (performance.now() - t0) / 1000;
  // Probe: cross-instance delivery is on once one broadcast reached every client.
  const probeUntil = performance.now() + 30_000;
  while (completed === 0 && performance.now() < probeUntil) {
    publish();
    await sleep(100);
  }
  if (completed === 0) {
    const got = (cs: Client[]): number => cs.filter((c) => c.last >= 0).length;
    throw new Error(`no probe broadcast reached every client within 30 s (${sent} sent; clients that got one: A ${got(clients.slice(0, perInstance))}/${perInstance}, B ${got(clients.slice(perInstance))}/${perInstance})`);
  }
  await drained(sent, 5_000);
  await fixedRate(rate, performance.now() + 1_000);
  result.fixed = await phase('fixed', (until) => fixedRate(rate, until));
  result.sat = await phase('sat', saturate);
  result.outOfOrder = outOfOrder;
  result.junk = clients.reduce((n, c) => n + c.junk, 0);
  result.closed = clients.filter((c) => c.ws.readyState !== WebSocket.OPEN).length;
  result.ok = outOfOrder === 0 && result.junk === 0 && result.closed === 0;
  for (const c of clients) c.ws.terminate();
} catch (err) {
  result.ok = false;
  result.error = (err as Error).message;
}
report(result);
process.exit(0);
