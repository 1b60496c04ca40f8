import net from 'node:net';
import { once } from 'node:events';

/** A TCP echo server on 127.0.0.1:0 that honours half-close (it ends after the client ends). */
export async function startEchoServer(): Promise<{ port: number; server: net.Server; sockets: Set<net.Socket>; [Symbol.asyncDispose](): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.pipe(s);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as net.AddressInfo).port,
    server,
    sockets,
    [Symbol.asyncDispose]: async () => {
      for (const s of sockets) s.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}

/** Connects, writes `data`, half-closes, and resolves with everything read until the server closed. */
export async function roundTrip(port: number, data: string | Buffer): Promise<string> {
  const c = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  c.on('error', () => {});
  await once(c, 'connect');
  const chunks: Buffer[] = [];
  c.on('data', (d: Buffer) => chunks.push(d));
  c.end(data);
  await once(c, 'end', { signal: AbortSignal.timeout(10_000) });
  c.destroy();
  return Buffer.concat(chunks).toString();
}

/** An open connection to read and write step by step. */
export async function connect(port: number): Promise<{ socket: net.Socket; send(s: string): Promise<string>; close(): Promise<void> }> {
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  socket.on('error', () => {});
  await once(socket, 'connect');
  let buf = '';
  let wake: (() => void) | undefined;
  socket.on('data', (d: Buffer) => {
    buf += d.toString();
    wake?.();
  });
  socket.on('close', () => wake?.());
  socket.on('end', () => wake?.());
  return {
    socket,
    /** Writes `s` and resolves with as many bytes read back (an echo). Rejects if the socket closes first. */
    send: async (s: string) => {
      socket.write(s);
      const deadline = AbortSignal.timeout(10_000);
      while (buf.length < s.length) {
        if (socket.destroyed || socket.readableEnded || deadline.aborted) throw new Error(`connection closed or timed out after ${buf.length} bytes`);
        await new Promise<void>((r) => {
          wake = r;
          deadline.addEventListener('abort', () => r(), { once: true });
        });
      }
      const out = buf.slice(0, s.length);
      buf = buf.slice(s.length);
      return out;
    },
    close: async () => {
      if (socket.destroyed) return;
      socket.destroy();
      await once(socket, 'close');
    },
  };
}

/** Connects, writes `data`, and resolves with what was read once the gateway closed the connection (FIN or RST). */
export async function readUntilClosed(port: number, data: string): Promise<string> {
  const c = net.connect({ port, host: '127.0.0.1' });
  c.on('error', () => {});
  const chunks: Buffer[] = [];
  c.on('data', (d: Buffer) => chunks.push(d));
  c.write(data);
  // Not events.once: it would reject on the reset's 'error', which is an expected ending here.
  await new Promise<void>((resolve, reject) => {
    const deadline = AbortSignal.timeout(10_000);
    deadline.addEventListener('abort', () => reject(new Error('connection not closed within 10 s')), { once: true });
    c.once('close', () => resolve());
  });
  return Buffer.concat(chunks).toString();
}
