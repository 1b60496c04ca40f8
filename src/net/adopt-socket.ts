/**
 * Moving an accepted socket's handle into a new socket that reads through `onread`. Split from
 * the connection actor: it is socket plumbing (Node internals), not the connection's life, and
 * any proxying listener could use it.
 */
import net from 'node:net';
import { nextReadBuffer } from './read-buffers.ts';

/** Set on a socket that reads through `onread` (no 'data' events). */
const kUserReads = Symbol('gatehouse.userReads');

/** A socket's `onread` callback: `n` bytes were read into `buf`; returning false stops reading (until resume()). */
export type ReadCallback = (this: net.Socket, n: number, buf: Buffer) => boolean;

/**
 * An accepted socket (paused: `pauseOnConnect`) made to read into the thread's reused buffers
 * through `onread` ({@link nextReadBuffer}), calling `onRead`, instead of a fresh 64 KiB buffer
 * per read (the cost that keeps a Node proxy's upload below HAProxy's, docs/benchmarks.md). Node
 * offers `onread` only to sockets it creates from options, so the accepted socket's handle is
 * moved into a new socket made with it; the old socket object is dropped without closing the
 * handle. Returns the socket unchanged when its handle cannot be taken.
 *
 * @example
 * const s = adoptSocket(accepted, onRead); // paused, allowHalfOpen; resume() to start reading
 * if (!readsThroughOnread(s)) s.on('data', onData);
 */
export function adoptSocket(accepted: net.Socket, onRead: ReadCallback): net.Socket {
  const old = accepted as net.Socket & { _handle?: { useUserBuffer?: unknown } | null };
  const handle = old._handle;
  // A TLS socket's handle is its TLS layer, which cannot move to a plain socket: kept as it is.
  if ((accepted as net.Socket & { encrypted?: boolean }).encrypted === true) return accepted;
  // Bytes already read (put back after a PROXY protocol header), or a peer address taken from
  // that header: both live on this socket object, which must then stay the one in use.
  if (accepted.readableLength > 0 || Object.hasOwn(accepted, 'remoteAddress')) return accepted;
  if (!handle || typeof handle.useUserBuffer !== 'function') return accepted;
  old._handle = null;
  old.destroy();
  const s = new net.Socket({
    handle,
    allowHalfOpen: true,
    pauseOnCreate: true,
    readable: true,
    writable: true,
    onread: { buffer: nextReadBuffer, callback: onRead as unknown as (n: number, buf: Uint8Array) => boolean },
  } as unknown as net.SocketConstructorOpts) as net.Socket & { [kUserReads]?: true };
  s[kUserReads] = true;
  return s;
}

/** True for a socket made by {@link adoptSocket}: its reads go to its `onread` callback, not to 'data' events. */
export function readsThroughOnread(s: net.Socket): boolean {
  return (s as net.Socket & { [kUserReads]?: true })[kUserReads] === true;
}
