/**
 * The response parser on real sockets (127.0.0.1, port 0): a close-delimited body ends at the
 * backend's FIN (Node's `'end'` event), a body cut by the FIN is refused, and after a 101 the
 * bytes that follow are tunnel data in both directions.
 */
import net from 'node:net';
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { AnswerTo, HttpParseError, ParseEvent, ResponseParser } from '../../src/http/codec/index.ts';

const open: (net.Server | net.Socket)[] = [];

afterEach(async () => {
  // Sockets first: a server's close waits for its connections.
  const handles = open.splice(0);
  for (const h of handles) if (h instanceof net.Socket) h.destroy();
  for (const h of handles) if (h instanceof net.Server) await new Promise((resolve) => h.close(resolve));
});

/** A backend that answers each connection with `onConnection`. */
async function backend(onConnection: (s: net.Socket) => void): Promise<number> {
  const server = net.createServer((s) => {
    open.push(s);
    onConnection(s);
  });
  open.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as net.AddressInfo).port;
}

interface Seen { status: number; body: string; events: number[]; error: HttpParseError | undefined; rest: Buffer | undefined }

/** Sends `request`, parses the answer until Closed, Paused, an error or the socket's close. */
async function exchange(port: number, request: string, answerTo: number): Promise<{ seen: Seen; socket: net.Socket }> {
  const socket = net.connect(port, '127.0.0.1');
  open.push(socket);
  const parser = new ResponseParser();
  parser.expect(answerTo);
  const seen: Seen = { status: 0, body: '', events: [], error: undefined, rest: undefined };
  const done = new Promise<void>((resolve) => {
    const drain = (): void => {
      try {
        for (let ev = parser.next(); ev !== ParseEvent.NeedMore; ev = parser.next()) {
          seen.events.push(ev);
          if (ev === ParseEvent.Head) seen.status = parser.head!.status;
          else if (ev === ParseEvent.Body) seen.body += parser.body.toString();
          else if (ev === ParseEvent.Paused || ev === ParseEvent.Closed) {
            if (ev === ParseEvent.Paused) seen.rest = parser.takeRest();
            socket.removeAllListeners('data');
            resolve();
            return;
          }
        }
      } catch (err) {
        seen.error = err as HttpParseError;
        resolve();
      }
    };
    socket.on('data', (chunk: Buffer) => { parser.feed(chunk); drain(); });
    // 'end' is the peer's FIN: it ends a close-delimited body.
    socket.on('end', () => { parser.eof(); drain(); });
    socket.on('close', () => resolve());
  });
  socket.write(request);
  await done;
  return { seen, socket };
}

describe('response parser on real sockets', () => {
  it('ends a body without length at the backend FIN, in several writes', async () => {
    const port = await backend((s) => {
      s.once('data', () => {
        s.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst ');
        setImmediate(() => s.end('second'));
      });
    });
    const { seen } = await exchange(port, 'GET / HTTP/1.1\r\nHost: b\r\n\r\n', AnswerTo.Plain);
    expect(seen.error).toBeUndefined();
    expect([seen.status, seen.body]).toEqual([200, 'first second']);
    expect(seen.events.slice(-2)).toEqual([ParseEvent.End, ParseEvent.Closed]);
  });

  it('refuses a Content-Length body cut short by the FIN with 502', async () => {
    const port = await backend((s) => s.once('data', () => s.end('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort')));
    const { seen } = await exchange(port, 'GET / HTTP/1.1\r\nHost: b\r\n\r\n', AnswerTo.Plain);
    expect(seen.error).toBeInstanceOf(HttpParseError);
    expect([seen.error!.status, seen.error!.message]).toEqual([502, 'upstream closed mid-response']);
  });

  it('hands the bytes after a 101 to the tunnel, which then carries data both ways', async () => {
    const port = await backend((s) => {
      s.once('data', () => {
        s.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nhello');
        s.on('data', (d) => s.write(d)); // now an echo tunnel
      });
    });
    const req = 'GET /ws HTTP/1.1\r\nHost: b\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n';
    const { seen, socket } = await exchange(port, req, AnswerTo.Upgrade);
    expect(seen.status).toBe(101);
    expect(seen.events.at(-1)).toBe(ParseEvent.Paused);
    let tunnel = seen.rest!.toString();
    socket.on('data', (d: Buffer) => { tunnel += d.toString(); });
    // 'hello' may have come with the head or in a later chunk: wait for it, then echo.
    await expect.poll(() => tunnel).toBe('hello');
    socket.write(' world');
    await expect.poll(() => tunnel).toBe('hello world');
  });
});
