/**
 * An upgraded HTTP connection (after a 101): a byte tunnel between the client socket and the
 * upstream socket that answered, with backpressure both ways and half-close passed on. The
 * upstream socket stays its pool's (busy, counted toward its backend) until the tunnel ends;
 * its reads keep arriving through the pool's handler and are written to the client as they are.
 */
import type net from 'node:net';
import type { PooledConnection, UpstreamPool } from './pool.ts';

type Conn = PooledConnection<unknown>;

/**
 * One tunnel; its connection actor routes every socket event of both sides here.
 *
 * @example
 * const t = new HttpTunnel(client, conn, pool, upstreamRest, clientRest);
 * // client 'data' → t.fromClient(chunk); pool read → t.fromUpstream(conn, chunk)
 */
export class HttpTunnel {
  readonly #client: net.Socket;
  readonly conn: Conn;
  readonly #pool: UpstreamPool<unknown>;

  /** `upstreamRest`: the upstream's bytes after its 101; `clientRest`: the client's after its request. */
  constructor(client: net.Socket, conn: Conn, pool: UpstreamPool<unknown>, upstreamRest: Buffer, clientRest: Buffer, idleTimeoutMs: number) {
    this.#client = client;
    this.conn = conn;
    this.#pool = pool;
    conn.socket.setTimeout(0);
    client.setTimeout(idleTimeoutMs);
    if (upstreamRest.length > 0) client.write(upstreamRest);
    if (clientRest.length > 0) conn.socket.write(clientRest);
    client.resume();
  }

  /** Client bytes: to the upstream; a full upstream pauses the client until its drain. */
  fromClient(chunk: Buffer): void {
    if (!this.conn.socket.write(chunk)) this.#client.pause();
  }

  /** Upstream bytes from `conn`: to the client; false pauses the upstream until the client drains. */
  fromUpstream(conn: Conn, chunk: Buffer): boolean {
    return conn === this.conn ? this.#client.write(chunk) : false;
  }

  /** The client sent its FIN: passed on. */
  clientEnded(): void {
    this.conn.socket.end();
  }

  clientDrained(): void {
    this.conn.socket.resume();
  }

  upstreamDrained(): void {
    this.#client.resume();
  }

  /** Ends the tunnel's upstream side (the client side is its connection's). */
  discard(): void {
    this.#pool.discard(this.conn);
  }
}
