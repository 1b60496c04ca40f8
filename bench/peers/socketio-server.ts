/**
 * The cluster-broadcast suite's peer (bench/cluster-broadcast.ts): one Socket.IO server with
 * `@socket.io/redis-adapter` (its default adapter, classic PUBLISH/PSUBSCRIBE, over ioredis), as a
 * Node team would set up several Socket.IO servers behind one Redis.
 *
 * - clients connect to the default namespace `/` (websocket transport only; `perMessageDeflate`
 *   off, as it is by default);
 * - the publisher (the equivalent of a Gatehouse node) connects to the namespace `/node` of one
 *   server and emits `broadcast` events; that server calls `io.emit('message', data)`: the adapter
 *   writes it to its own clients and publishes it once to Redis, and every other server writes it
 *   to its clients.
 *
 * usage: node bench/peers/socketio-server.ts PORT REDIS_URL KEY
 * KEY is the adapter's channel prefix (`key`), so that runs sharing one Redis stay apart.
 * prints {"ready":true} once it listens and both Redis connections are ready.
 */
import http from 'node:http';
import { once } from 'node:events';
import { createAdapter } from '@socket.io/redis-adapter';
import { Redis } from 'ioredis';
import { Server } from 'socket.io';
import { exitWithParent, intArg, report } from '../lib/child.ts';

const USAGE = 'node bench/peers/socketio-server.ts PORT REDIS_URL KEY';
const port = intArg(process.argv[2], 'PORT', USAGE);
const redisUrl = process.argv[3];
const key = process.argv[4];
if (!redisUrl || !key) {
  process.stderr.write(`usage: ${USAGE}\n`);
  process.exit(2);
}
exitWithParent();

const pub = new Redis(redisUrl);
const sub = pub.duplicate();
const ready = (r: Redis): Promise<unknown> => (r.status === 'ready' ? Promise.resolve() : once(r, 'ready'));
await Promise.all([ready(pub), ready(sub)]);

const httpServer = http.createServer();
const io = new Server(httpServer, { adapter: createAdapter(pub, sub, { key }), transports: ['websocket'], serveClient: false });
io.of('/node').on('connection', (socket) => {
  socket.on('broadcast', (data: unknown) => {
    io.emit('message', data);
  });
});
httpServer.listen(port, '127.0.0.1');
await once(httpServer, 'listening');
report({ ready: true });
