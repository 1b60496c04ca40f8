/**
 * Hub load generator: plays the node AND the clients, so the proxy under test (Gatehouse's hub
 * or the baseline ws relay) is the only thing between them.
 *
 * 1. Listens as the node on NODE_PORT (ws, any path) and waits for the proxy's stream (`hello`).
 * 2. Connects CLIENTS clients to ws://127.0.0.1:PROXY_PORT/connect (one user each; a JWT signed
 *    with SECRET for Gatehouse, `?user=` for the relay) and waits for every `welcome`.
 * 3. Fan-out: the node broadcasts MSGS messages as fast as its stream drains; the time from the
 *    first send to the last client receiving the last message gives deliveries per second
 *    (CLIENTS × MSGS / seconds). Every client must receive every message (checked by count and
 *    order), else the run is reported as failed.
 * 4. Latency: REQ_CLIENTS clients each send `request`s one after the other for REQ_SECONDS; the
 *    node answers at once; round trips give p50 / p99.
 * Bounded everywhere: deadlines per phase, at most 1,000,000 requests.
 *
 * usage: node bench/load/hub-load.ts NODE_PORT PROXY_PORT gatehouse|relay CLIENTS MSGS REQ_CLIENTS REQ_SECONDS SECRET
 * prints {"nodeListening":true}, then one JSON result line.
 */
import { WebSocket, WebSocketServer } from 'ws';
import { SignJWT } from 'jose';
import { exitWithParent, intArg, report } from '../lib/child.ts';

const USAGE = 'node bench/load/hub-load.ts NODE_PORT PROXY_PORT gatehouse|relay CLIENTS MSGS REQ_CLIENTS REQ_SECONDS SECRET';
const [, , np, pp, mode, nc, nm, nrc, rs, secret] = process.argv;
const nodePort = intArg(np, 'NODE_PORT', USAGE);
const proxyPort = intArg(pp, 'PROXY_PORT', USAGE);
const nClients = Math.max(1, intArg(nc, 'CLIENTS', USAGE));
const nMsgs = Math.max(1, intArg(nm, 'MSGS', USAGE));
const reqClients = Math.min(nClients, intArg(nrc, 'REQ_CLIENTS', USAGE));
const reqSeconds = Number(rs);
if ((mode !== 'gatehouse' && mode !== 'relay') || !(reqSeconds >= 0 && reqSeconds <= 120) || !secret) {
  process.stderr.write(`usage: ${USAGE}\n`);
  process.exit(2);
}
exitWithParent();

const PHASE_MS = 120_000;
const MAX_REQUESTS = 1_000_000;
const PAD = 'x'.repeat(64);

function deadline<T>(p: Promise<T>, what: string, ms = PHASE_MS): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, rej) => (timer = setTimeout(() => rej(new Error(`${what}: no result within ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
}

// --- the node -------------------------------------------------------------------------------
let gateway: WebSocket | undefined;
let gatewayUp!: () => void;
const gatewayReady = new Promise<void>((r) => (gatewayUp = r));
const node = new WebSocketServer({ host: '127.0.0.1', port: nodePort });
node.on('connection', (ws) => {
  ws.on('error', () => {});
  ws.on('message', (raw) => {
    const m = JSON.parse(raw.toString()) as { type: string; id?: string; data?: unknown };
    if (m.type === 'hello') {
      gateway = ws;
      gatewayUp();
    } else if (m.type === 'request') ws.send(JSON.stringify({ type: 'response', id: m.id, data: m.data }));
  });
});
await new Promise<void>((r) => node.once('listening', () => r()));
report({ nodeListening: true });

async function waitDrained(ws: WebSocket, limit: number): Promise<void> {
  for (let i = 0; ws.bufferedAmount > limit && i < 1_000_000; i++) await new Promise((r) => setImmediate(r));
}

// --- the clients ----------------------------------------------------------------------------
interface C {
  ws: WebSocket;
  got: number;
  bad: number;
  onMessage: ((m: { type: string; id?: string; data?: { s?: number } }) => void) | undefined;
}

async function token(user: string): Promise<string> {
  return new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(user).setIssuedAt().setExpirationTime('1h').sign(new TextEncoder().encode(secret));
}

async function connectClient(i: number): Promise<C> {
  const user = `u${i}`;
  const q = mode === 'gatehouse' ? `token=${await token(user)}` : `user=${user}`;
  for (let attempt = 0; ; attempt++) {
    try {
      return await new Promise<C>((resolve, reject) => {
        const ws = new WebSocket(`ws://127.0.0.1:${proxyPort}/connect?${q}`, { perMessageDeflate: false });
        const c: C = { ws, got: 0, bad: 0, onMessage: undefined };
        ws.on('error', reject);
        ws.on('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
        ws.on('message', (raw) => {
          const m = JSON.parse(raw.toString());
          if (m.type === 'welcome') resolve(c);
          else if (m.type === 'message') {
            if (m.data?.s === c.got) c.got++;
            else c.bad++;
          } else c.onMessage?.(m);
        });
      });
    } catch (err) {
      if (attempt >= 20) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

const result: Record<string, unknown> = { mode, clients: nClients, msgs: nMsgs };
try {
  await deadline(gatewayReady, 'the proxy stream to the node');
  const clients: C[] = [];
  for (let i = 0; i < nClients; i += 100) {
    clients.push(...(await deadline(Promise.all(Array.from({ length: Math.min(100, nClients - i) }, (_, k) => connectClient(i + k))), 'connecting clients')));
  }

  // Fan-out.
  const gw = gateway!;
  let allIn!: () => void;
  const done = new Promise<void>((r) => (allIn = r));
  const check = setInterval(() => {
    if (clients.every((c) => c.got + c.bad >= nMsgs)) allIn();
  }, 2);
  report({ phase: 'fanout-start' });
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let s = 0; s < nMsgs; s++) {
    gw.send(`{"type":"broadcast","data":{"s":${s},"pad":"${PAD}"}}`);
    if (gw.bufferedAmount > 256 * 1024) await waitDrained(gw, 64 * 1024);
  }
  await deadline(done, 'fan-out').finally(() => clearInterval(check));
  const secs = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  report({ phase: 'fanout-end' });
  const bad = clients.reduce((n, c) => n + c.bad, 0);
  result.fanoutSecs = secs;
  result.deliveriesPerSec = (nClients * nMsgs) / secs;
  result.bad = bad;
  result.loadCpuS = (cpu.user + cpu.system) / 1e6;

  // Request / response latency.
  if (reqClients > 0 && reqSeconds > 0) {
    const lat: number[] = [];
    const until = performance.now() + reqSeconds * 1000;
    let errors = 0;
    await deadline(
      Promise.all(
        clients.slice(0, reqClients).map(async (c, k) => {
          for (let n = 0; performance.now() < until && lat.length < MAX_REQUESTS; n++) {
            const id = `r${k}.${n}`;
            const t = performance.now();
            const reply = await new Promise<{ type: string }>((resolve) => {
              c.onMessage = (m) => {
                if (m.id === id) resolve(m);
              };
              c.ws.send(JSON.stringify({ type: 'request', id, node: 'n1', data: { k, n } }));
            });
            if (reply.type === 'response') lat.push(performance.now() - t);
            else errors++;
          }
        }),
      ),
      'requests',
      reqSeconds * 1000 + 30_000,
    );
    lat.sort((a, b) => a - b);
    const q = (p: number) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] ?? NaN;
    result.requests = lat.length;
    result.requestErrors = errors;
    result.p50Ms = q(0.5);
    result.p99Ms = q(0.99);
    result.reqPerSec = lat.length / reqSeconds;
  }
  result.ok = bad === 0;
  for (const c of clients) c.ws.terminate();
} catch (err) {
  result.ok = false;
  result.error = (err as Error).message;
}
report(result);
node.close();
process.exit(0);
