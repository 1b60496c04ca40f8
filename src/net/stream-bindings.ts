/**
 * Node's stream-handle bindings as a RawSocket (raw-socket.ts) uses them: the shapes of the
 * `tcp_wrap` / `stream_wrap` objects it calls (a TCP handle, its write, shutdown and connect
 * requests, the shared `streamBaseState`), looked up once through `process.binding`, and libuv's
 * status codes turned into the errors `net.Socket` gives. Split from raw-socket.ts: this is the
 * one place that knows Node's internals; the socket's life is there.
 *
 * @example
 * const b = load(); // null: use net.Socket
 * if (b) { const req = new b.WriteWrap(); ... if (b.state[b.kLastWriteWasAsync]) ... }
 */
import { getSystemErrorName } from 'node:util';
import type { RawSocket } from './raw-socket.ts';

/** libuv's end-of-file read status. */
export const UV_EOF = -4095;

/** What a RawSocket uses of a libuv stream handle (`TCPWrap` through `StreamBase`). */
export interface StreamHandle {
  onread: (this: StreamHandle) => Uint8Array | undefined;
  readStart(): number;
  readStop(): number;
  useUserBuffer(buf: Uint8Array): void;
  writeBuffer(req: WriteReq, buf: Uint8Array): number;
  writeLatin1String(req: WriteReq, s: string): number;
  writeUtf8String(req: WriteReq, s: string): number;
  writev(req: WriteReq, chunks: Uint8Array[], allBuffers: true): number;
  shutdown(req: ShutdownReq): number;
  close(cb?: (this: StreamHandle) => void): void;
  reset?(cb?: (this: StreamHandle) => void): number;
  getpeername(out: Record<string, unknown>): number;
  getsockname(out: Record<string, unknown>): number;
  setNoDelay(on: boolean): number;
  connect?(req: ConnectReq, address: string, port: number): number;
  connect6?(req: ConnectReq, address: string, port: number): number;
  readonly writeQueueSize: number;
  [kOwner]?: RawSocket;
}
export interface WriteReq {
  handle: StreamHandle;
  oncomplete: (this: WriteReq, status: number) => void;
  /** The bytes, kept alive while the write is queued. */
  buffer: unknown;
  callback: ((err?: Error | null) => void) | undefined;
}
export interface ShutdownReq {
  handle: StreamHandle;
  oncomplete: (this: ShutdownReq, status: number) => void;
}
export interface ConnectReq {
  oncomplete: (status: number, handle: StreamHandle) => void;
  address: string;
  port: number;
}
export interface Bindings {
  WriteWrap: new () => WriteReq;
  ShutdownWrap: new () => ShutdownReq;
  state: Int32Array;
  kReadBytesOrError: number;
  kLastWriteWasAsync: number;
  /** For outgoing connections (`tcp_wrap`); undefined where that binding differs. */
  tcp?: { TCP: new (type: number) => StreamHandle; ConnectWrap: new () => ConnectReq; socketType: number };
}

/** The RawSocket a handle belongs to (set on the handle, read by the shared callbacks). */
export const kOwner = Symbol('gatehouse.rawSocket');

let bindings: Bindings | null | undefined;


/**
 * Node's stream bindings, looked up once: null where they cannot be had (a Node without
 * `process.binding('stream_wrap')`, other shapes) or `GATEHOUSE_RAW_SOCKETS=0` asks not to.
 */
export function load(): Bindings | null {
  if (bindings !== undefined) return bindings;
  bindings = null;
  if (process.env.GATEHOUSE_RAW_SOCKETS === '0') return null;
  try {
    const binding = (process as unknown as { binding?: (name: string) => Record<string, unknown> }).binding;
    const sw = binding?.('stream_wrap');
    if (sw === undefined) return null;
    const { WriteWrap, ShutdownWrap, streamBaseState, kReadBytesOrError, kLastWriteWasAsync } = sw;
    if (typeof WriteWrap !== 'function' || typeof ShutdownWrap !== 'function' || !(streamBaseState instanceof Int32Array)) return null;
    if (typeof kReadBytesOrError !== 'number' || typeof kLastWriteWasAsync !== 'number') return null;
    bindings = { WriteWrap: WriteWrap as Bindings['WriteWrap'], ShutdownWrap: ShutdownWrap as Bindings['ShutdownWrap'], state: streamBaseState, kReadBytesOrError, kLastWriteWasAsync };
    const tw = binding?.('tcp_wrap') as { TCP?: unknown; TCPConnectWrap?: unknown; constants?: { SOCKET?: unknown } } | undefined;
    if (typeof tw?.TCP === 'function' && typeof tw.TCPConnectWrap === 'function' && typeof tw.constants?.SOCKET === 'number') {
      bindings.tcp = { TCP: tw.TCP as new (type: number) => StreamHandle, ConnectWrap: tw.TCPConnectWrap as new () => ConnectReq, socketType: tw.constants.SOCKET };
    }
  } catch {
    bindings = null;
  }
  return bindings;
}

/** Whether this Node offers what a RawSocket needs (checked once), and it is not turned off. */
export function rawSocketsAvailable(): boolean {
  return load() !== null;
}

/** Whether `handle` (an accepted client handle) has the stream methods a RawSocket calls. */
export function isRawCapable(handle: unknown): boolean {
  const h = handle as Partial<StreamHandle> | undefined;
  return typeof h?.useUserBuffer === 'function' && typeof h.writev === 'function' && typeof h.shutdown === 'function' && typeof h.readStart === 'function';
}

/** A libuv status as the error `net.Socket` would give (`code` ECONNRESET, `syscall` read, ...). */
export function errno(status: number, syscall: string): NodeJS.ErrnoException {
  let code: string;
  try {
    code = getSystemErrorName(status);
  } catch {
    code = `E${-status}`;
  }
  const err = new Error(`${syscall} ${code}`) as NodeJS.ErrnoException;
  err.errno = status;
  err.code = code;
  err.syscall = syscall;
  return err;
}
