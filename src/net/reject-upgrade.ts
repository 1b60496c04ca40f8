import type net from 'node:net';
import { STATUS_CODES } from 'node:http';

/**
 * Answers a request on a raw socket with a plain HTTP error (a JSON body) and closes it: for an
 * upgrade that is refused (bad token, a limit, a draining listener) or a request the HTTP parser
 * could not read. Nothing happens when the socket is gone already.
 *
 * @example
 * rejectUpgrade(socket, 429, { error: 'rate_limited' }, { 'Retry-After': '1' });
 */
export function rejectUpgrade(socket: net.Socket, status: number, body: Record<string, unknown>, headers: Record<string, string> = {}): void {
  if (socket.destroyed) return;
  const json = JSON.stringify(body);
  let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(json)}\r\n`;
  for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`;
  // Destroyed once the answer is handed to the kernel: a peer that never closes its side keeps nothing.
  socket.end(`${head}\r\n${json}`, () => socket.destroy());
}
