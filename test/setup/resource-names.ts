import net from 'node:net';
import dgram from 'node:dgram';
import { ChildProcess } from 'node:child_process';
import { MessagePort } from 'node:worker_threads';

/**
 * The names `process.getActiveResourcesInfo()` uses on Node 24 (checked one by one), in the
 * words a test author looks for. Requests (`...ReqWrap`, `ConnectWrap`) are operations in
 * flight; the rest are handles that keep the process alive until closed.
 */
const HUMAN: Record<string, string> = {
  TCPSocketWrap: 'TCP socket',
  TCPServerWrap: 'TCP server',
  PipeWrap: 'pipe (child process stdio, IPC, or unix-domain socket/server)',
  TTYWrap: 'TTY stream',
  UDPWrap: 'UDP socket',
  ProcessWrap: 'child process',
  Timeout: 'timer (setTimeout/setInterval not cleared)',
  Immediate: 'setImmediate callback not yet run',
  MessagePort: 'MessagePort (a worker_threads port with a listener, not closed)',
  Worker: 'worker thread',
  FSEventWrap: 'fs.watch watcher',
  StatWatcher: 'fs.watchFile watcher',
  SignalWrap: 'signal handler',
  FSReqCallback: 'file-system call in flight',
  FSReqPromise: 'fs.promises call in flight',
  FileHandle: 'open fs.promises FileHandle',
  GetAddrInfoReqWrap: 'DNS lookup in flight',
  GetNameInfoReqWrap: 'reverse DNS lookup in flight',
  QueryReqWrap: 'DNS query in flight',
  ConnectWrap: 'socket connect in flight',
  ShutdownWrap: 'socket end (shutdown) in flight',
  SimpleShutdownWrap: 'socket end (shutdown) in flight',
  WriteWrap: 'socket write in flight',
  SimpleWriteWrap: 'socket write in flight',
  SendWrap: 'UDP send in flight',
};

/** A resource name from `process.getActiveResourcesInfo()` in human terms (`TCPServerWrap` → `TCP server`). */
export function humanResourceName(raw: string): string {
  return HUMAN[raw] ?? raw;
}

/** An open handle as `process._getActiveHandles()` returns it, with the resource name it counts under. */
export interface HandleInfo {
  raw: string;
  text: string;
}

type HandleOwner = { constructor?: { name?: string }; _handle?: { constructor?: { name?: string } } | null };

function rawNameOf(h: HandleOwner): string {
  const handleClass = h._handle?.constructor?.name;
  if (h instanceof net.Server) return handleClass === 'Pipe' ? 'PipeWrap' : 'TCPServerWrap';
  if (h instanceof net.Socket) return handleClass === 'Pipe' ? 'PipeWrap' : handleClass === 'TTY' ? 'TTYWrap' : 'TCPSocketWrap';
  if (h instanceof ChildProcess) return 'ProcessWrap';
  if (h instanceof dgram.Socket) return 'UDPWrap';
  if (h instanceof MessagePort) return 'MessagePort';
  return h.constructor?.name ?? 'unknown';
}

function addr(host: string | undefined, port: number | undefined): string {
  return host === undefined ? '?' : `${host}:${port}`;
}

function describeSocket(s: net.Socket, children: Map<object, ChildProcess>): string {
  const child = children.get(s);
  if (child) return `stdio pipe of child process pid ${child.pid} (${child.spawnargs.join(' ')})`;
  const state = s.connecting ? 'connecting' : s.readyState;
  if (s.remoteAddress === undefined && s.localAddress === undefined) return `pipe or unix socket (${state})`;
  return `socket ${addr(s.localAddress, s.localPort)} -> ${addr(s.remoteAddress, s.remotePort)} (${state})`;
}

function describe(h: HandleOwner, children: Map<object, ChildProcess>): string {
  if (h instanceof net.Server) {
    const a = h.address();
    return `server listening on ${typeof a === 'string' ? a : a ? `${a.address}:${a.port}` : '?'}`;
  }
  if (h instanceof net.Socket) return describeSocket(h, children);
  if (h instanceof ChildProcess) return `child process pid ${h.pid}: ${h.spawnargs.join(' ')}`;
  if (h instanceof dgram.Socket) {
    try {
      const a = h.address();
      return `UDP socket bound to ${a.address}:${a.port}`;
    } catch {
      return 'UDP socket (not bound)';
    }
  }
  if (h instanceof MessagePort) return 'MessagePort with a listener: close it or unref() it';
  return h.constructor?.name ?? 'unknown handle';
}

/**
 * The handles currently keeping the process alive, described (`server listening on
 * 127.0.0.1:43121`, `child process pid 812: sleep 10`). Uses `process._getActiveHandles()`,
 * undocumented but present on Node 24; it only adds detail to the counts, so an empty list is safe.
 */
export function activeHandles(): { owner: object; info: HandleInfo }[] {
  const get = (process as unknown as { _getActiveHandles?: () => unknown[] })._getActiveHandles;
  const handles = (typeof get === 'function' ? get.call(process) : []).filter(
    (h): h is HandleOwner & object => typeof h === 'object' && h !== null,
  );
  const children = new Map<object, ChildProcess>();
  for (const h of handles) {
    if (h instanceof ChildProcess) for (const s of h.stdio) if (s) children.set(s, h);
  }
  return handles.map((h) => ({ owner: h, info: { raw: rawNameOf(h), text: describe(h, children) } }));
}
