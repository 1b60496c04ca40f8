/**
 * acceptThroughOnread: a bound server whose accepted sockets read through `onread` from their
 * accept (one `net.Socket` per connection), with Node's own path when `use()` says no. Real
 * sockets on 127.0.0.1; the leak check (test/setup) runs after the file.
 */
import net from 'node:net';
import { once } from 'node:events';
import { describe, expect, test } from 'vitest';
import { acceptThroughOnread, adoptSocket, readsThroughOnread, type ReadCallback } from '../../src/net/adopt-socket.ts';
import { until } from '../helpers/daemon.ts';

interface Setup {
  server: net.Server;
  port: number;
  accepted: net.Socket[];
  /** Bytes each accepted socket delivered to the onread callback, in order. */
  read: Map<net.Socket, string>;
  close(): Promise<void>;
}

async function serve(use: () => boolean): Promise<Setup> {
  const read = new Map<net.Socket, string>();
  const onRead: ReadCallback = function (n, buf) {
    read.set(this, (read.get(this) ?? '') + buf.toString('latin1', 0, n));
    return true;
  };
  const accepted: net.Socket[] = [];
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (s) => {
    accepted.push(s);
    s.on('error', () => {});
    s.resume();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  expect(acceptThroughOnread(server, onRead, use)).toBe(true);
  return {
    server,
    port: (server.address() as net.AddressInfo).port,
    accepted,
    read,
    async close() {
      for (const s of accepted) s.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}

async function connect(port: number): Promise<net.Socket> {
  const c = net.connect(port, '127.0.0.1');
  c.on('error', () => {});
  await once(c, 'connect');
  return c;
}

describe('acceptThroughOnread', () => {
  test('accepted sockets read through onread from the accept, are counted by the server, and keep the server options', async () => {
    const x = await serve(() => true);
    const c = await connect(x.port);
    c.write('hello');
    await until(() => x.accepted[0] && x.read.get(x.accepted[0]) === 'hello', 5_000, 'bytes at the onread callback');
    const s = x.accepted[0]!;
    expect(readsThroughOnread(s)).toBe(true);
    // The connection actors call adoptSocket on every accepted socket: this one is kept as it is.
    expect(adoptSocket(s, () => true)).toBe(s);
    expect(s.allowHalfOpen).toBe(true);
    expect(s.remoteAddress).toBe('127.0.0.1');
    expect(await new Promise<number>((r, j) => x.server.getConnections((e, n) => (e ? j(e) : r(n))))).toBe(1);
    // Written both ways, half-closed by the client: the server side still writes, then ends.
    const got: Buffer[] = [];
    c.on('data', (d: Buffer) => got.push(d));
    c.end();
    await once(s, 'end');
    s.end('bye');
    await once(c, 'close');
    expect(Buffer.concat(got).toString()).toBe('bye');
    // The server's count drops when the socket closes, so close() completes.
    await until(() => s.destroyed, 5_000, 'server socket closed');
    expect(await new Promise<number>((r, j) => x.server.getConnections((e, n) => (e ? j(e) : r(n))))).toBe(0);
    await x.close();
  });

  test('use() false at an accept: Node makes the socket (data events), and the next accept can go through onread again', async () => {
    let on = false;
    const x = await serve(() => on);
    const a = await connect(x.port);
    await until(() => x.accepted.length === 1, 5_000, 'first accept');
    expect(readsThroughOnread(x.accepted[0]!)).toBe(false);
    const data: string[] = [];
    x.accepted[0]!.on('data', (d: Buffer) => data.push(d.toString()));
    a.write('plain');
    await until(() => data.join('') === 'plain', 5_000, "bytes as 'data'");
    on = true;
    const b = await connect(x.port);
    await until(() => x.accepted.length === 2, 5_000, 'second accept');
    expect(readsThroughOnread(x.accepted[1]!)).toBe(true);
    b.write('onread');
    await until(() => x.read.get(x.accepted[1]!) === 'onread', 5_000, 'bytes at the onread callback');
    a.destroy();
    b.destroy();
    await x.close();
  });

  test('a server that is not listening is left as it is', () => {
    const server = net.createServer();
    expect(acceptThroughOnread(server, () => true, () => true)).toBe(false);
  });
});
