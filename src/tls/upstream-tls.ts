/**
 * TLS origination to backends (upstream `tls`): one connect function for the TCP proxy's
 * backend sockets and the HTTP pools' sockets. A plain backend gets a `net` socket that reads
 * through `onread` into the shard's shared buffers; a TLS backend gets a `TLSSocket` whose
 * decrypted chunks are handed to the same callback. The caller waits for `event` (`connect`, or
 * `secureConnect` once the handshake and the certificate check are done): a failed handshake
 * is an `error` before it, so it counts as a connect failure (retry, breaker) like a refused
 * connect. The PEM material is read by the main thread; each shard makes one SecureContext per
 * upstream settings object.
 */
import net from 'node:net';
import type tls from 'node:tls';

/**
 * `node:tls`, loaded on first use: a shard thread whose listeners and upstreams have no TLS
 * never loads it (nor the OpenSSL state it sets up per thread).
 */
const tlsModule = (): typeof tls => process.getBuiltinModule('node:tls');
import { nextReadBuffer } from '../net/read-buffers.ts';
import { RawSocket, type RawReadCallback } from '../net/raw-socket.ts';

/** An upstream's TLS settings with the files' contents, as the shards get them. */
export interface ShardUpstreamTls {
  /** SNI and the name checked; absent: the backend's host (an IP: no SNI, the IP is checked). */
  serverName?: string;
  caPem?: string;
  certPem?: string;
  keyPem?: string;
  verify: boolean;
  minVersion: 'TLSv1.2' | 'TLSv1.3';
}

/** `n` bytes were read into `buf` (reused by the next read: copy what you keep); false pauses the socket. */
export type UpstreamRead = (this: net.Socket, n: number, buf: Buffer) => boolean;

const contexts = new WeakMap<ShardUpstreamTls, tls.SecureContext>();

function contextFor(t: ShardUpstreamTls): tls.SecureContext {
  let c = contexts.get(t);
  if (!c) {
    c = tlsModule().createSecureContext({
      minVersion: t.minVersion,
      ...(t.caPem !== undefined && { ca: t.caPem }),
      ...(t.certPem !== undefined && { cert: t.certPem, key: t.keyPem }),
    });
    contexts.set(t, c);
  }
  return c;
}

/**
 * Opens a backend connection, plain or TLS.
 *
 * @example
 * const { socket, event } = connectUpstream('10.0.0.5', 8443, { tls: up.tls, noDelay: true, onRead });
 * socket.once(event, onConnected);
 */
export function connectUpstream(
  host: string,
  port: number,
  o: { tls?: ShardUpstreamTls; noDelay: boolean; allowHalfOpen?: boolean; alpn?: string[]; onRead: UpstreamRead; proxyHeader?: Buffer; raw?: boolean },
): { socket: net.Socket; event: 'connect' | 'secureConnect' } {
  const t = o.tls;
  const family = net.isIP(host);
  if (t === undefined && o.raw === true && family !== 0) {
    // No net.Socket (net/raw-socket.ts): the caller uses only what a RawSocket offers.
    const raw = RawSocket.connect(host, port, family as 4 | 6, o.onRead as unknown as RawReadCallback, o.allowHalfOpen ?? false);
    if (raw !== undefined) {
      if (o.noDelay) raw.setNoDelay(true);
      if (o.proxyHeader) raw.write(o.proxyHeader);
      return { socket: raw as unknown as net.Socket, event: 'connect' };
    }
  }
  if (t === undefined) {
    const socket = net.connect({
      host,
      port,
      noDelay: o.noDelay,
      allowHalfOpen: o.allowHalfOpen ?? false,
      onread: { buffer: nextReadBuffer, callback: o.onRead as unknown as (n: number, buf: Uint8Array) => boolean },
    });
    // The first bytes on the connection (queued until it connects): nothing precedes them.
    if (o.proxyHeader) socket.write(o.proxyHeader);
    return { socket, event: 'connect' };
  }
  const servername = t.serverName ?? (net.isIP(host) === 0 ? host : undefined);
  // A PROXY protocol header goes before the TLS handshake, on the plain TCP connection under it.
  let raw: net.Socket | undefined;
  if (o.proxyHeader) {
    raw = net.connect({ host, port, noDelay: o.noDelay, allowHalfOpen: o.allowHalfOpen ?? false });
    raw.write(o.proxyHeader);
  }
  const socket = tlsModule().connect({
    ...(raw ? { socket: raw } : { host, port }),
    ...(servername !== undefined && { servername }),
    secureContext: contextFor(t),
    rejectUnauthorized: t.verify,
    ...(!t.verify && { checkServerIdentity: () => undefined }),
    ...(o.alpn && { ALPNProtocols: o.alpn }),
    allowHalfOpen: o.allowHalfOpen ?? false,
  } as unknown as tls.ConnectionOptions);
  socket.setNoDelay(o.noDelay);
  const onRead = o.onRead;
  socket.on('data', function (this: tls.TLSSocket, chunk: Buffer) {
    if (!onRead.call(this, chunk.length, chunk)) this.pause();
  });
  return { socket, event: 'secureConnect' };
}
