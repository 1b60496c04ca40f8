import http from 'node:http';
import { fromCallback, setup } from 'xstate';
import { defineActor } from '../../src/index.ts';

interface DemoOptions {
  /** Port to serve on (127.0.0.1). */
  port: number;
  /** Answers `hello from NAME`. */
  name?: string;
}

/**
 * A demo HTTP backend run as a custom actor, so the quickstart serves real traffic on its own.
 * It answers every request with `hello from NAME` and its request count. The server lives in an
 * invoked callback actor: its disposer closes it, whatever ends the actor.
 */
export default defineActor<DemoOptions>({
  name: 'demo-http-backend',
  logic: (ctx) => {
    const name = ctx.options.name ?? `backend-${ctx.options.port}`;
    const server = fromCallback<{ type: 'noop' }>(({ sendBack }) => {
      let served = 0;
      const srv = http.createServer((req, res) => {
        served++;
        res.setHeader('content-type', 'text/plain; charset=utf-8');
        res.end(`hello from ${name} (request ${served}, ${req.method} ${req.url})\n`);
      });
      srv.on('error', (error) => sendBack({ type: 'server.failed', error }));
      srv.listen(ctx.options.port, '127.0.0.1', () => sendBack({ type: 'server.listening' }));
      return () => {
        srv.closeAllConnections();
        srv.close();
      };
    });
    return setup({
      types: { events: {} as { type: 'server.listening' } | { type: 'server.failed'; error: Error } },
      actors: { server },
    }).createMachine({
      id: 'demoBackend',
      initial: 'starting',
      invoke: { src: 'server' },
      states: {
        starting: {
          on: {
            'server.listening': { target: 'serving', actions: () => ctx.log.info({ port: ctx.options.port }, 'demo backend listening') },
          },
        },
        serving: {},
      },
      on: {
        // A server that cannot listen is a crash: the supervisor restarts the actor, and gives up
        // past its restart intensity.
        'server.failed': {
          actions: ({ event }) => {
            throw event.error;
          },
        },
      },
    });
  },
});
