import http from 'node:http';
import { fromCallback } from 'xstate';
import { defineActor } from '../../src/index.ts';

interface DemoOptions {
  /** Port to serve on (127.0.0.1). */
  port: number;
  /** Answers `hello from NAME`. */
  name?: string;
}

/**
 * A demo HTTP backend run as a custom actor, so the quickstart serves real traffic on its own.
 * It answers every request with `hello from NAME` and its request count.
 */
export default defineActor<DemoOptions>({
  name: 'demo-http-backend',
  logic: (ctx) =>
    fromCallback(({ sendBack }) => {
      const name = ctx.options.name ?? `backend-${ctx.options.port}`;
      let served = 0;
      const server = http.createServer((req, res) => {
        served++;
        res.setHeader('content-type', 'text/plain; charset=utf-8');
        res.end(`hello from ${name} (request ${served}, ${req.method} ${req.url})\n`);
      });
      server.on('error', (err) => {
        ctx.log.error({ err, port: ctx.options.port }, 'demo backend failed');
        // Crash the actor: its supervisor decides (restart, then give up past its intensity).
        sendBack({ type: 'xstate.error', error: err });
        server.close();
      });
      server.listen(ctx.options.port, '127.0.0.1', () => ctx.log.info({ port: ctx.options.port }, 'demo backend listening'));
      return () => {
        server.closeAllConnections();
        server.close();
      };
    }),
});
