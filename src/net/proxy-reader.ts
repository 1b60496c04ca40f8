/**
 * Reading the PROXY protocol header off a new connection (listener `proxyProtocol`), before
 * anything else sees the socket: limits, TLS, the protocol. From a peer in `trustedProxies` the
 * header is required; the address it carries becomes the socket's `remoteAddress` and
 * `remotePort` (own properties that shadow Node's getters), so per-IP limits, X-Forwarded-For,
 * rate-limit keys and logs all see the client, not the load balancer. From any other peer a
 * header closes the connection, and plain traffic is served: its first bytes are read to tell
 * (http and hub listeners, where the client speaks first) and put back in front of the stream.
 * A LOCAL header (a load balancer's health check) keeps the peer's own address.
 */
import type net from 'node:net';
import { parseProxyHeader, type ProxyHeader } from './proxy-protocol.ts';

/** The outcome of {@link readProxyHeader}. */
export type ProxyRead =
  | { ok: true; header: ProxyHeader | undefined }
  | { ok: false; reason: 'missing' | 'malformed' | 'untrusted_header' | 'timeout' | 'closed'; detail: string };

export interface ProxyReadOptions {
  accept: 'v1' | 'v2' | 'any';
  /** The peer is a trusted proxy: a header is required. */
  trusted: boolean;
  /** Untrusted peers: look at their first bytes for a header (false: serve them untouched). */
  peekUntrusted: boolean;
  timeoutMs: number;
}

/**
 * Reads the start of `socket` (accepted paused) as the options say, then calls `done` once,
 * with the socket paused again and any bytes past the header put back (`unshift`): whoever
 * reads next sees the stream as if no header had been there. On `ok: false` the caller closes
 * the socket.
 *
 * @example
 * readProxyHeader(socket, { accept: 'any', trusted, peekUntrusted: true, timeoutMs: 5_000 }, (r) => r.ok ? serve(socket) : socket.destroy());
 */
export function readProxyHeader(socket: net.Socket, opts: ProxyReadOptions, done: (r: ProxyRead) => void): void {
  if (!opts.trusted && !opts.peekUntrusted) return done({ ok: true, header: undefined });
  let buf: Buffer | undefined;
  let finished = false;
  const finish = (r: ProxyRead, rest?: Buffer): void => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    socket.removeListener('data', onData);
    socket.removeListener('end', onEnd);
    socket.removeListener('close', onEnd);
    socket.pause();
    if (r.ok && rest !== undefined && rest.length > 0) socket.unshift(rest);
    done(r);
  };
  const onData = (chunk: Buffer): void => {
    buf = buf === undefined ? chunk : Buffer.concat([buf, chunk]);
    const p = parseProxyHeader(buf, opts.accept);
    if (p.kind === 'need-more') return;
    if (p.kind === 'header') {
      if (!opts.trusted) return finish({ ok: false, reason: 'untrusted_header', detail: 'a PROXY protocol header from a peer not in trustedProxies' });
      applyAddress(socket, p.header);
      return finish({ ok: true, header: p.header }, buf.subarray(p.length));
    }
    if (!opts.trusted && p.code === 'not_proxy') return finish({ ok: true, header: undefined }, buf);
    if (!opts.trusted) return finish({ ok: false, reason: 'untrusted_header', detail: `a PROXY protocol header from a peer not in trustedProxies (${p.message})` });
    finish({ ok: false, reason: p.code === 'not_proxy' ? 'missing' : 'malformed', detail: p.message });
  };
  const onEnd = (): void => finish({ ok: false, reason: 'closed', detail: 'the connection ended before its PROXY protocol header' });
  const timer = setTimeout(() => {
    // An untrusted client that says nothing first (it waits for the server): served as it is.
    if (!opts.trusted && buf === undefined) return finish({ ok: true, header: undefined });
    finish({ ok: false, reason: 'timeout', detail: `no complete PROXY protocol header within ${opts.timeoutMs} ms` });
  }, opts.timeoutMs);
  socket.on('data', onData);
  socket.on('end', onEnd);
  socket.on('close', onEnd);
  socket.resume();
}

/** Makes the header's source the socket's peer (a LOCAL or UNKNOWN header leaves it as it is). */
function applyAddress(socket: net.Socket, h: ProxyHeader): void {
  if (h.command !== 'proxy' || h.source === undefined || (h.family !== 'tcp4' && h.family !== 'tcp6')) return;
  Object.defineProperty(socket, 'remoteAddress', { value: h.source.address, configurable: true });
  Object.defineProperty(socket, 'remotePort', { value: h.source.port, configurable: true });
  Object.defineProperty(socket, 'remoteFamily', { value: h.family === 'tcp4' ? 'IPv4' : 'IPv6', configurable: true });
}

/** Copies an address {@link readProxyHeader} set onto the TLS socket that wraps `raw`. */
export function inheritProxyAddress(raw: net.Socket, wrapped: net.Socket): void {
  const d = Object.getOwnPropertyDescriptor(raw, 'remoteAddress');
  if (d === undefined) return;
  for (const k of ['remoteAddress', 'remotePort', 'remoteFamily'] as const) {
    Object.defineProperty(wrapped, k, { value: (raw as unknown as Record<string, unknown>)[k], configurable: true });
  }
}
