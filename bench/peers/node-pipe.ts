/**
 * Rows `node-pipe*`: the plain Node proxy, net server + `pipe()` both ways (a copy of
 * /work/shared/bench/node/tcp-pipe.mjs). THREADS=0 (default): the main thread only, the baseline
 * Gatehouse is compared to; THREADS=N: N worker threads binding the port with `reusePort` (the
 * same shape as Gatehouse's data plane, to tell thread costs from Gatehouse's own).
 * usage: node bench/peers/node-pipe.ts LISTEN_PORT UP_HOST UP_PORT [THREADS]   (prints {"ready":true,"port":N})
 */
import net from 'node:net';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { exitWithParent, intArg, report } from '../lib/child.ts';

function serve(listenPort: number, upHost: string, upPort: number, reusePort: boolean, ready: (port: number) => void): void {
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
    const upstream = net.connect({ host: upHost, port: upPort, allowHalfOpen: true, noDelay: true });
    const kill = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', kill);
    upstream.on('error', kill);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
  });
  server.listen({ port: listenPort, host: '127.0.0.1', backlog: 4096, reusePort }, () => ready((server.address() as net.AddressInfo).port));
}

if (isMainThread) {
  const USAGE = 'node bench/peers/node-pipe.ts LISTEN_PORT UP_HOST UP_PORT [THREADS]';
  const listenPort = intArg(process.argv[2], 'LISTEN_PORT', USAGE);
  const upHost = process.argv[3] ?? '127.0.0.1';
  const upPort = intArg(process.argv[4], 'UP_PORT', USAGE);
  const threads = intArg(process.argv[5] ?? '0', 'THREADS', USAGE);
  exitWithParent();
  if (threads === 0) serve(listenPort, upHost, upPort, false, (port) => report({ ready: true, port }));
  else {
    if (listenPort === 0) throw new Error('THREADS > 0 needs a fixed LISTEN_PORT (reusePort)');
    let ready = 0;
    for (let i = 0; i < threads; i++) {
      const w = new Worker(new URL(import.meta.url), { workerData: { listenPort, upHost, upPort } });
      w.on('message', () => {
        if (++ready === threads) report({ ready: true, port: listenPort, threads });
      });
      w.on('error', (err) => {
        process.stderr.write(`worker error: ${err.stack}\n`);
        process.exit(1);
      });
    }
  }
} else {
  const { listenPort, upHost, upPort } = workerData as { listenPort: number; upHost: string; upPort: number };
  serve(listenPort, upHost, upPort, true, () => parentPort!.postMessage('ready'));
}
