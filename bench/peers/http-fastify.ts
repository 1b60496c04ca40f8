/**
 * HTTP peer `fastify`: the Node reverse proxy a user would pick off the shelf, fastify with
 * `@fastify/http-proxy` (which forwards through `@fastify/reply-from` over an undici agent, at
 * most 64 connections to the backend, as the Gatehouse rows' upstream pool). Logging off; adds
 * `X-Forwarded-For` (appended to an incoming one) and `X-Request-Id` (fastify's request id) like
 * the other proxy rows. One thread.
 * usage: node bench/peers/http-fastify.ts LISTEN_PORT UP_HOST UP_PORT   (prints {"ready":true,"port":N})
 */
import Fastify from 'fastify';
import proxy from '@fastify/http-proxy';
import { exitWithParent, intArg, report } from '../lib/child.ts';

const USAGE = 'node bench/peers/http-fastify.ts LISTEN_PORT UP_HOST UP_PORT';
const listenPort = intArg(process.argv[2], 'LISTEN_PORT', USAGE);
const upHost = process.argv[3] ?? '127.0.0.1';
const upPort = intArg(process.argv[4], 'UP_PORT', USAGE);
exitWithParent();

const app = Fastify({ logger: false, keepAliveTimeout: 65_000, requestIdHeader: 'x-request-id' });
await app.register(proxy, {
  upstream: `http://${upHost}:${upPort}`,
  undici: { connections: 64, pipelining: 1, keepAliveTimeout: 60_000 },
  disableRequestLogging: true,
  replyOptions: {
    rewriteRequestHeaders: (req, headers) => {
      const peer = req.socket.remoteAddress ?? '';
      const xff = headers['x-forwarded-for'];
      headers['x-forwarded-for'] = xff ? `${String(xff)}, ${peer}` : peer;
      headers['x-request-id'] = String(req.id);
      return headers;
    },
  },
});
await app.listen({ port: listenPort, host: '127.0.0.1', backlog: 4096 });
report({ ready: true, port: listenPort });
