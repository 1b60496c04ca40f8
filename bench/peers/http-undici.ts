/**
 * HTTP peer `node-http-undici`: the reverse proxy most Node services write by hand, a `node:http`
 * server forwarding each request through an undici `Pool` (keep-alive to the backend, at most
 * 64 connections, as the Gatehouse rows' upstream pool). Like the other proxy rows it drops the
 * hop-by-hop fields and adds `X-Forwarded-For` (appended to an incoming one) and `X-Request-Id`
 * (kept when the client sent one, else a per-process prefix and a counter). One thread.
 * usage: node bench/peers/http-undici.ts LISTEN_PORT UP_HOST UP_PORT   (prints {"ready":true,"port":N})
 */
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { Pool } from 'undici';
import { exitWithParent, intArg, report } from '../lib/child.ts';

const USAGE = 'node bench/peers/http-undici.ts LISTEN_PORT UP_HOST UP_PORT';
const listenPort = intArg(process.argv[2], 'LISTEN_PORT', USAGE);
const upHost = process.argv[3] ?? '127.0.0.1';
const upPort = intArg(process.argv[4], 'UP_PORT', USAGE);
exitWithParent();

const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'host']);
const pool = new Pool(`http://${upHost}:${upPort}`, { connections: 64, pipelining: 1, keepAliveTimeout: 60_000 });
const idPrefix = randomBytes(8).toString('hex');
let idCounter = 0;

const server = http.createServer(async (req, res) => {
  const headers: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(req.headers)) if (v !== undefined && !HOP.has(k)) headers[k] = v;
  const peer = req.socket.remoteAddress ?? '';
  const xff = req.headers['x-forwarded-for'];
  headers['x-forwarded-for'] = xff ? `${String(xff)}, ${peer}` : peer;
  if (typeof req.headers['x-request-id'] !== 'string') headers['x-request-id'] = `${idPrefix}-${(++idCounter).toString(36)}`;
  const hasBody = !(req.method === 'GET' || req.method === 'HEAD');
  try {
    const up = await pool.request({ path: req.url ?? '/', method: req.method as 'GET', headers, body: hasBody ? req : null });
    const out: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(up.headers)) if (v !== undefined && !HOP.has(k)) out[k] = v;
    res.writeHead(up.statusCode, out);
    for await (const chunk of up.body) res.write(chunk);
    res.end();
  } catch {
    if (!res.headersSent) res.writeHead(502);
    res.end();
  }
});
server.keepAliveTimeout = 65_000;
server.listen({ port: listenPort, host: '127.0.0.1', backlog: 4096 }, () => report({ ready: true, port: listenPort }));
