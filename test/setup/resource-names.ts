import net from 'node:net';
import dgram from 'node:dgram';
import { ChildProcess } from 'node:child_process';
import type { HandleResource, TrackedHandle } from './handles.ts';

/**
 * The `async_hooks` types (checked one by one on Node 24), in the words a test author looks for.
 * Requests (`...WRAP` of a connect, write, lookup, fs call) are operations in flight; the rest
 * are handles and timers, which stay until closed or cleared.
 */
const HUMAN: Record<string, string> = {
  TCPWRAP: 'TCP socket',
  TCPSERVERWRAP: 'TCP server',
  PIPEWRAP: 'pipe (child process stdio, IPC, or unix-domain socket)',
  PIPESERVERWRAP: 'unix-domain socket server',
  TTYWRAP: 'TTY stream',
  UDPWRAP: 'UDP socket',
  JSUDPWRAP: 'UDP socket (JS)',
  PROCESSWRAP: 'child process',
  Timeout: 'timer (setTimeout/setInterval not cleared)',
  Immediate: 'setImmediate callback not yet run',
  MESSAGEPORT: 'MessagePort (a worker_threads port not closed)',
  FSEVENTWRAP: 'fs.watch watcher',
  STATWATCHER: 'fs.watchFile watcher',
  SIGNALWRAP: 'signal handler',
  FSREQCALLBACK: 'file-system call in flight',
  FSREQPROMISE: 'fs.promises call in flight',
  FILEHANDLE: 'open fs.promises FileHandle',
  GETADDRINFOREQWRAP: 'DNS lookup in flight',
  GETNAMEINFOREQWRAP: 'reverse DNS lookup in flight',
  QUERYWRAP: 'DNS query in flight',
  TCPCONNECTWRAP: 'socket connect in flight',
  PIPECONNECTWRAP: 'pipe connect in flight',
  SHUTDOWNWRAP: 'socket end (shutdown) in flight',
  WRITEWRAP: 'socket write in flight',
  UDPSENDWRAP: 'UDP send in flight',
};

/** An `async_hooks` type in human terms (`TCPSERVERWRAP` → `TCP server`). */
export function humanResourceName(type: string): string {
  return HUMAN[type] ?? type;
}

type Owner = object & { _handle?: unknown };

/** The JS object that owns a native handle (`net.Socket`, `net.Server`, `ChildProcess`, ...): Node links it with a symbol described `owner_symbol`. */
export function ownerOf(resource: HandleResource | undefined): Owner | undefined {
  if (resource === undefined) return undefined;
  const sym = Object.getOwnPropertySymbols(resource).find((s) => s.description === 'owner_symbol');
  const owner = sym ? (resource as Record<symbol, unknown>)[sym] : undefined;
  return typeof owner === 'object' && owner !== null ? (owner as Owner) : undefined;
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

function describeOwner(o: Owner, children: Map<object, ChildProcess>): string | undefined {
  if (o instanceof net.Server) {
    const a = o.address();
    return `server listening on ${typeof a === 'string' ? a : a ? `${a.address}:${a.port}` : '?'}`;
  }
  if (o instanceof net.Socket) return describeSocket(o, children);
  if (o instanceof ChildProcess) return `child process pid ${o.pid}: ${o.spawnargs.join(' ')}`;
  if (o instanceof dgram.Socket) {
    try {
      const a = o.address();
      return `UDP socket bound to ${a.address}:${a.port}`;
    } catch {
      return 'UDP socket (not bound)';
    }
  }
  return undefined;
}

/** The child processes among `handles`, by each of their stdio streams. */
export function childrenByStdio(handles: readonly TrackedHandle[]): Map<object, ChildProcess> {
  const children = new Map<object, ChildProcess>();
  for (const h of handles) {
    const o = ownerOf(h.resource);
    if (o instanceof ChildProcess) for (const s of o.stdio) if (s) children.set(s, o);
  }
  return children;
}

/**
 * One line about a live resource: a server's listen address, a socket's addresses and state,
 * a child's pid and command line, a timer's kind and delay; with `unref'd` when it does not
 * keep the process alive and `closing` when its owner already let go of it.
 *
 * @example
 * describeHandle(h, childrenByStdio(all)); // 'server listening on 127.0.0.1:43121 (unref'd)'
 */
export function describeHandle(h: TrackedHandle, children: Map<object, ChildProcess>): string {
  const r = h.resource;
  const flags: string[] = [];
  if (typeof r?.hasRef === 'function' && !r.hasRef()) flags.push("unref'd");
  let text: string;
  if (h.type === 'Timeout') text = r?._repeat ? `setInterval every ${r._repeat} ms` : `setTimeout of ${r?._idleTimeout} ms`;
  else if (h.type === 'Immediate') text = 'setImmediate';
  else if (h.type === 'MESSAGEPORT') text = 'MessagePort: close it (port.close()) or close its channel';
  else {
    const owner = ownerOf(r);
    text = (owner && describeOwner(owner, children)) ?? `${humanResourceName(h.type)} (${r?.constructor?.name ?? 'collected'})`;
    // The owner drops `_handle` when it closes the handle; the handle itself goes a turn later.
    if (owner && '_handle' in owner && owner._handle !== r) flags.push('closing');
  }
  return flags.length > 0 ? `${text} (${flags.join(', ')})` : text;
}
