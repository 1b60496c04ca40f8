import type net from 'node:net';
import { once } from 'node:events';
import { ListenError } from '../errors.ts';

/**
 * Binds a listener's server (`reusePort` so that every shard binds the same address) and
 * resolves with the address it got. Rejects with `GH_ERR_LISTEN` naming the listener.
 *
 * @example
 * const { host, port } = await bindServer(server, 'tcp-in', '127.0.0.1', 0, true);
 */
export async function bindServer(server: net.Server, name: string, host: string, port: number, reusePort: boolean): Promise<{ host: string; port: number }> {
  const onError = once(server, 'error');
  server.listen({ host, port, backlog: 4096, reusePort });
  const first = await Promise.race([once(server, 'listening'), onError]);
  if (first[0] instanceof Error) throw new ListenError(name, `${host}:${port}`, { cause: first[0] });
  const a = server.address() as net.AddressInfo;
  return { host: a.address, port: a.port };
}
