/**
 * A hub client's frames, both ways: the base class of {@link ClientProxyActor}, which keeps the
 * handshake, the socket's events and the lifecycle. Split out of it because the frame path is a
 * concept of its own: frames in are rate-limited, parsed and routed to a node; frames out go
 * straight to the socket while it keeps up, then into a bounded send queue flushed on `drain`,
 * whose overflow closes the client (1013) or drops its oldest frame, as configured. A base class
 * rather than an object the client holds: hubs hold tens of thousands of clients.
 */
import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import { Actor } from '../runtime/actor.ts';
import { L } from '../workers/state-table.ts';
import { nextGid, pickNode } from '../hub/messages.ts';
import { clientMessageFrame, errorFrame, frameId, nodeDownFrame, parseClientFrame, requestFrame } from '../hub/frames.ts';
import type { HubContext } from './client-proxy.ts';

/**
 * A client whose refused frames outrun the refill by this many times its burst (it kept flooding
 * after being told `rate_limited`) is closed with 1008 (policy violation). The bucket itself is
 * the listener's `clientRateLimit` (default 100 frames per second, bursts of 200).
 */
export const CLIENT_FLOOD_BURSTS = 5;
/**
 * Frames are written straight to the socket while it holds less than this (bytes not yet taken
 * by the kernel); above it they wait in the client's send queue until the socket drains.
 */
export const SOCKET_HIGH_WATER = 64 * 1024;

/** A frame the gateway itself makes for the client (welcome, error): not counted as a node-to-client message. */
export interface LocalFrame {
  f: string;
}
/** A frame from the main thread (text, or its UTF-8 bytes when shared by several clients), or a local one. */
type Queued = string | Buffer | LocalFrame;
const TEXT = { binary: false } as const;

/**
 * The frame path of one hub client (see the module comment). Frames flow only while the client
 * is `registered`; the subclass supplies its context, WebSocket, logger and close.
 */
export abstract class ClientFrames extends Actor {
  abstract readonly clientId: string;
  /** The token's `sub`; set when registered. */
  userId: string | undefined;
  /** The nodes this client is bound to (it sent to them). A new array on every change: it is indexed. */
  nodes: readonly string[] = [];
  /** The most frames its send queue ever held (memory is bounded by `sendQueue.maxMessages`). */
  maxQueued = 0;
  /** The send queue: `#queue[#qHead..]`, allocated on first use, released when it empties. */
  #queue: Queued[] | undefined;
  #qHead = 0;
  #tokens: number;
  #debt = 0;
  #rateAt = 0;

  constructor(id: string, type: string, burst: number) {
    super(id, type);
    this.#tokens = burst;
  }

  /** The listener's context this client was made with. */
  protected abstract get ctx(): HubContext;
  /** The client's WebSocket, once registered. */
  protected abstract get ws(): WebSocket | undefined;
  /** The client's logger (bound to its ids). */
  protected abstract get logger(): Logger;
  /** Re-registers the client, so its registry entry's index keys (`node`) follow `nodes`. */
  protected abstract reindex(): void;
  /** Starts a close with a code: the client leaves `registered` at once. */
  abstract close(code: number, reason: string): void;

  /** Frames waiting in the send queue. */
  get queued(): number {
    return this.#queue ? this.#queue.length - this.#qHead : 0;
  }

  /** Starts the rate limit's clock: called when the client is registered. */
  protected startRate(): void {
    this.#rateAt = performance.now();
  }

  // ---- inbound ---------------------------------------------------------------------------------

  /** Token bucket (the listener's `clientRateLimit`); refused frames build up a debt that drains at the same rate. */
  #admit(): boolean {
    const { perSecond, burst } = this.ctx.hub.clientRateLimit;
    const now = performance.now();
    const refill = ((now - this.#rateAt) * perSecond) / 1_000;
    this.#rateAt = now;
    this.#tokens = Math.min(burst, this.#tokens + refill);
    this.#debt = Math.max(0, this.#debt - refill);
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return true;
    }
    this.#debt += 1;
    return false;
  }

  /** A frame from the client: refused (binary, over its rate, malformed, no node), or routed to a node. */
  protected onFrame(data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean): void {
    if (this.state !== 'registered') return;
    const ctx = this.ctx;
    const { table, shard } = ctx;
    const slot = ctx.listener.slot;
    if (isBinary) {
      table.listenerAdd(shard, slot, L.HUB_DROP_BAD, 1);
      this.logger.info('hub client sent a binary frame: closed (1003)');
      this.close(1003, 'binary frames are not supported');
      return;
    }
    const text = Array.isArray(data) ? Buffer.concat(data).toString() : Buffer.isBuffer(data) ? data.toString() : Buffer.from(data).toString();
    if (!this.#admit()) {
      table.listenerAdd(shard, slot, L.HUB_DROP_RATE, 1);
      if (this.#debt > CLIENT_FLOOD_BURSTS * ctx.hub.clientRateLimit.burst) {
        this.logger.warn(ctx.hub.clientRateLimit, 'hub client kept flooding past its rate limit: closed (1008)');
        this.close(1008, 'rate limit exceeded');
        return;
      }
      this.enqueue({ f: errorFrame('rate_limited', frameId(text)) });
      return;
    }
    const r = parseClientFrame(text);
    if (!r.ok) {
      table.listenerAdd(shard, slot, L.HUB_DROP_BAD, 1);
      this.logger.debug({ why: r.why }, 'hub client frame refused: bad_request');
      this.enqueue({ f: errorFrame('bad_request', r.id) });
      return;
    }
    const f = r.frame;
    if (f.type === 'resume') {
      // Answered by the main thread (Redis): the missed messages then `resumed`, or `resume-failed`.
      ctx.post({ type: 'hub-resume', listener: ctx.listener.name, clientId: this.clientId, userId: this.userId!, epoch: f.epoch, offset: f.offset });
      return;
    }
    const ready = ctx.readyNodes();
    const node = f.node !== undefined ? (ready.includes(f.node) ? f.node : undefined) : pickNode(this.userId!, ready);
    if (node === undefined) {
      table.listenerAdd(shard, slot, L.HUB_DROP_UNAVAILABLE, 1);
      this.logger.debug({ node: f.node, ready }, 'hub client frame refused: node_unavailable');
      this.enqueue({ f: errorFrame('node_unavailable', f.id) });
      return;
    }
    this.#bind(node);
    const listener = ctx.listener.name;
    if (f.type === 'send') {
      ctx.post({ type: 'hub-send', listener, node, clientId: this.clientId, frame: clientMessageFrame(this.clientId, this.userId!, f.data), ...(f.id !== undefined && { id: f.id }) });
    } else {
      const gid = nextGid(shard);
      ctx.post({ type: 'hub-request', listener, node, clientId: this.clientId, reqId: f.id, gid, frame: requestFrame(gid, this.clientId, this.userId!, f.data) });
    }
    table.listenerAdd(shard, slot, L.HUB_IN, 1);
  }

  #bind(node: string): void {
    if (this.nodes.includes(node)) return;
    this.nodes = [...this.nodes, node];
    this.reindex();
  }

  // ---- outbound --------------------------------------------------------------------------------

  /**
   * Queues a frame from the main thread (a node's message, a response or error, node-down) for
   * this client. True when it was written or queued; false when the client is not serving (not
   * registered any more) or its full queue made it close.
   */
  deliver(frame: string | Buffer): boolean {
    return this.enqueue(frame);
  }

  /** The node went down: the client is told (`node-down`) and loses its binding to it. */
  nodeDown(node: string): boolean {
    if (!this.nodes.includes(node)) return false;
    this.nodes = this.nodes.filter((n) => n !== node);
    if (this.state === 'registered') this.reindex();
    return this.enqueue(nodeDownFrame(node));
  }

  #write(item: Queued): void {
    const ctx = this.ctx;
    if (typeof item === 'string') {
      this.ws!.send(item);
      ctx.table.listenerAdd(ctx.shard, ctx.listener.slot, L.HUB_OUT, 1);
    } else if (Buffer.isBuffer(item)) {
      this.ws!.send(item, TEXT);
      ctx.table.listenerAdd(ctx.shard, ctx.listener.slot, L.HUB_OUT, 1);
    } else {
      this.ws!.send(item.f);
    }
  }

  /** Writes a frame now, or queues it behind a busy socket; false when not serving or the queue overflowed into a close. */
  protected enqueue(item: Queued): boolean {
    if (this.state !== 'registered') return false;
    const ws = this.ws!;
    const q = this.#queue;
    if ((q === undefined || q.length === this.#qHead) && ws.bufferedAmount < SOCKET_HIGH_WATER) {
      this.#write(item);
      return true;
    }
    const { maxMessages, onOverflow } = this.ctx.hub.sendQueue;
    const max = Math.max(1, maxMessages);
    if (this.queued >= max) {
      const { table, shard, listener } = this.ctx;
      if (onOverflow === 'close') {
        table.listenerAdd(shard, listener.slot, L.HUB_SLOW_CLOSED, 1);
        this.logger.warn({ maxMessages: max }, 'hub client send queue full: slow consumer closed (1013)');
        this.close(1013, 'slow consumer');
        return false;
      }
      // drop-oldest
      q![this.#qHead++] = undefined as unknown as Queued;
      table.listenerAdd(shard, listener.slot, L.HUB_DROP_QUEUE, 1);
    }
    const queue = (this.#queue ??= []);
    queue.push(item);
    // Compact the consumed head now and then: amortised O(1), never more than twice max slots.
    if (this.#qHead >= 1024 || (this.#qHead > 0 && this.#qHead * 2 >= queue.length)) {
      this.#queue = queue.slice(this.#qHead);
      this.#qHead = 0;
    }
    const n = this.queued;
    if (n > this.maxQueued) this.maxQueued = n;
    return true;
  }

  /** The socket drained: writes queued frames while it keeps up. */
  protected flush(): void {
    const q = this.#queue;
    if (q === undefined || this.state !== 'registered') return;
    const ws = this.ws!;
    while (this.#qHead < q.length && ws.bufferedAmount < SOCKET_HIGH_WATER) {
      const item = q[this.#qHead]!;
      q[this.#qHead++] = undefined as unknown as Queued;
      this.#write(item);
    }
    if (this.#qHead === q.length) {
      this.#queue = undefined;
      this.#qHead = 0;
    }
  }

  /** Drops every queued frame (the client is closing). */
  protected dropQueue(): void {
    this.#queue = undefined;
    this.#qHead = 0;
  }
}
