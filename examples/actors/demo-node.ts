import { fromCallback, setup } from 'xstate';
import { WebSocketServer, type WebSocket } from 'ws';
import { defineActor } from '../../src/index.ts';

interface DemoNodeOptions {
  /** Port to serve on (127.0.0.1); the hub dials ws://127.0.0.1:PORT/gate. */
  port: number;
  /** The node's id in the hub's `nodes:` list (shown in its replies). */
  id?: string;
}

/**
 * A demo hub node run as a custom actor, so the quickstart's hub has a node to talk to. It speaks
 * the node side of the hub protocol (docs/hub-protocol.md):
 * - a client `send` of `{"to":"USER","text":...}` is pushed to that user's clients (a chat), and
 *   any other `send` is echoed back to the sender's user;
 * - a `request` is answered with `{"echo":DATA,"node":ID}`;
 * - presence changes are broadcast to every client as `{"presence":USER,"online":BOOL}`.
 * The server lives in an invoked callback actor: its disposer closes it, whatever ends the actor.
 */
export default defineActor<DemoNodeOptions>({
  name: 'demo-hub-node',
  logic: (ctx) => {
    const id = ctx.options.id ?? `node-${ctx.options.port}`;
    const server = fromCallback<{ type: 'noop' }>(({ sendBack }) => {
      const wss = new WebSocketServer({ host: '127.0.0.1', port: ctx.options.port, path: '/gate' });
      const send = (ws: WebSocket, m: unknown): void => {
        if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(m));
      };
      wss.on('connection', (ws) => {
        ws.on('error', () => {});
        ws.on('message', (raw) => {
          let m: { type?: string; id?: string; userId?: string; clientId?: string; data?: unknown; online?: boolean; gateId?: string };
          try {
            m = JSON.parse(String(raw));
          } catch {
            return;
          }
          if (m.type === 'hello') ctx.log.info({ gateId: m.gateId }, 'demo node: gateway connected');
          else if (m.type === 'client-message') {
            const d = m.data as { to?: unknown; text?: unknown } | undefined;
            if (d && typeof d.to === 'string') send(ws, { type: 'push', userId: d.to, data: { from: m.userId, text: d.text } });
            else send(ws, { type: 'push', userId: m.userId, data: { echo: m.data, node: id } });
          } else if (m.type === 'request') send(ws, { type: 'response', id: m.id, data: { echo: m.data, node: id } });
          else if (m.type === 'presence') send(ws, { type: 'broadcast', data: { presence: m.userId, online: m.online } });
        });
      });
      wss.on('error', (error) => sendBack({ type: 'server.failed', error }));
      wss.on('listening', () => sendBack({ type: 'server.listening' }));
      return () => {
        for (const c of wss.clients) c.terminate();
        wss.close();
      };
    });
    return setup({
      types: { events: {} as { type: 'server.listening' } | { type: 'server.failed'; error: Error } },
      actors: { server },
    }).createMachine({
      id: 'demoNode',
      initial: 'starting',
      invoke: { src: 'server' },
      states: {
        starting: {
          on: {
            'server.listening': { target: 'serving', actions: () => ctx.log.info({ port: ctx.options.port, node: id }, 'demo hub node listening') },
          },
        },
        serving: {},
      },
      on: {
        'server.failed': {
          actions: ({ event }) => {
            throw event.error;
          },
        },
      },
    });
  },
});
