/**
 * The socket side of a hub node stream: one WebSocket at a time to one node, and the limits on
 * what it carries. Kept apart from the stream's machine (`node-stream.ts`), which decides when
 * to dial, greet, ping and back off; this file only does what it is told to the socket.
 */
import WebSocket from 'ws';

/** A graceful close waits this long for the node's close frame, then drops the socket. */
export const NODE_CLOSE_TIMEOUT_MS = 1_000;
/**
 * Bytes queued toward a node past which a frame is refused (`node_unavailable`) instead of
 * queued: a stalled node must not grow the gateway's memory without bound.
 */
export const NODE_MAX_BUFFERED = 16 * 1024 * 1024;
/**
 * The largest frame a node may send (ws closes the stream with 1009 past it, and the stream
 * reconnects): a push is re-serialised and fanned out, so one frame must not pin hundreds of MB.
 */
export const NODE_MAX_PAYLOAD = 16 * 1024 * 1024;

/** What the link tells the machine. Frames do not go through the machine: they go to `onFrame`. */
export type LinkEvent = { type: 'link.open' } | { type: 'link.closed'; code: number; reason: string } | { type: 'link.error'; message: string } | { type: 'link.pong' };

/**
 * The socket of a node stream, owned outside xstate so that it can always be released
 * (`MachineActor`'s `release`, xstate#4726). One socket at a time: dialing again, hanging up or
 * releasing detaches the old socket's listeners first, so a late event of an old socket never
 * reaches the machine.
 *
 * @example
 * const link = new NodeLink((text) => route(text));
 * link.dial('ws://127.0.0.1:7001/gate', (e) => {
 *   if (e.type === 'link.open') link.greet('{"type":"hello","gateId":"g1"}');
 * });
 */
export class NodeLink {
  #ws: WebSocket | undefined;
  /** Hello sent on the current socket: frames may flow. */
  #greeted = false;
  #closeTimer: NodeJS.Timeout | undefined;
  readonly #onFrame: (text: string, binary: boolean) => void;

  constructor(onFrame: (text: string, binary: boolean) => void) {
    this.#onFrame = onFrame;
  }

  dial(url: string, emit: (e: LinkEvent) => void): void {
    this.hangUp();
    this.#greeted = false;
    const ws = new WebSocket(url, { perMessageDeflate: false, followRedirects: false, maxPayload: NODE_MAX_PAYLOAD });
    this.#ws = ws;
    ws.on('open', () => emit({ type: 'link.open' }));
    ws.on('pong', () => emit({ type: 'link.pong' }));
    ws.on('error', (err) => emit({ type: 'link.error', message: err.message }));
    ws.on('close', (code, reason) => {
      if (this.#ws === ws) {
        this.#ws = undefined;
        this.#greeted = false;
      }
      this.#clearCloseTimer();
      emit({ type: 'link.closed', code, reason: reason.toString() });
    });
    ws.on('message', (data, isBinary) => this.#onFrame(isBinary ? '' : data.toString(), isBinary));
  }

  get open(): boolean {
    return this.#ws?.readyState === WebSocket.OPEN;
  }

  /** Open and greeted (`hello` sent): frames may flow. */
  get ready(): boolean {
    return this.#greeted && this.open;
  }

  /** Sends `hello`, the first frame of every stream; from then on the stream is ready. */
  greet(hello: string): boolean {
    if (!this.send(hello)) return false;
    this.#greeted = true;
    return true;
  }

  /** Queues a text frame; false when the socket is not open or too much is queued already. */
  send(text: string): boolean {
    const ws = this.#ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || ws.bufferedAmount > NODE_MAX_BUFFERED) return false;
    ws.send(text);
    return true;
  }

  ping(): void {
    const ws = this.#ws;
    if (ws?.readyState === WebSocket.OPEN) ws.ping();
  }

  /** Starts a polite close (1001); the socket is dropped if the node has not answered within {@link NODE_CLOSE_TIMEOUT_MS}. */
  close(): boolean {
    this.#greeted = false;
    const ws = this.#ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      this.hangUp();
      return false;
    }
    ws.close(1001, 'gateway going away');
    this.#closeTimer = setTimeout(() => this.hangUp(), NODE_CLOSE_TIMEOUT_MS);
    return true;
  }

  /** Stops reading the node's frames (and pongs) until {@link resume}. */
  pause(): void {
    this.#ws?.pause();
  }

  resume(): void {
    this.#ws?.resume();
  }

  /** Drops the socket now, keeping its listeners: the machine sees it close and backs off, then redials. */
  reset(): void {
    this.#ws?.terminate();
  }

  /** Drops the socket now (no close handshake) and forgets it: its events no longer reach anyone. */
  hangUp(): void {
    this.#greeted = false;
    this.#clearCloseTimer();
    const ws = this.#ws;
    if (!ws) return;
    this.#ws = undefined;
    ws.removeAllListeners();
    ws.on('error', () => {});
    ws.terminate();
  }

  #clearCloseTimer(): void {
    if (this.#closeTimer) clearTimeout(this.#closeTimer);
    this.#closeTimer = undefined;
  }
}
