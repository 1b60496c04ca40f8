import { assign, fromCallback, setup } from 'xstate';
import type { Logger } from 'pino';
import { MachineActor } from '../runtime/machine-actor.ts';
import type { Actor, ExitReason } from '../runtime/actor.ts';
import { NODE_CLOSE_TIMEOUT_MS, NodeLink, type LinkEvent } from './node-link.ts';

export { NODE_CLOSE_TIMEOUT_MS, NODE_MAX_BUFFERED, NODE_MAX_PAYLOAD, NodeLink } from './node-link.ts';

/**
 * The gateway's one stream to one hub node (`node:LISTENER/NODEID`): it dials the node's URL,
 * says `hello`, keeps the stream alive with WebSocket ping/pong and reconnects with exponential
 * backoff and full jitter. See docs/hub-protocol.md ("Gateway and nodes").
 */

/** First backoff ceiling: the first retry waits a random 0..100 ms. */
export const NODE_BACKOFF_BASE_MS = 100;
/** Backoff ceiling: no retry waits more than 5 s, however long the node has been away. */
export const NODE_BACKOFF_CAP_MS = 5_000;
/** A dial (TCP connect + WebSocket handshake) that has not opened within this gives up and backs off. */
export const NODE_CONNECT_TIMEOUT_MS = 5_000;
/** A stream that stayed ready this long starts its next backoff from the base again. */
export const NODE_STABLE_MS = 2_000;
/** How often a stream paused for pacing checks whether the shards have caught up. */
export const PACE_CHECK_MS = 5;

/**
 * Full-jitter exponential backoff (AWS Architecture Blog, "Exponential Backoff And Jitter"):
 * a random delay in `[0, min(cap, base * 2^attempt))`.
 *
 * @example
 * backoffDelay(0); // 0..100 ms
 * backoffDelay(10); // 0..5000 ms
 */
export function backoffDelay(attempt: number, baseMs = NODE_BACKOFF_BASE_MS, capMs = NODE_BACKOFF_CAP_MS, random: () => number = Math.random): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/** Settings read when they are used, so that a reload applies without restarting the stream. */
export interface NodeStreamSettings {
  pingIntervalMs: number;
  /** The gateway instance's name, sent in `hello` (`cluster.instanceId`, or the host name). */
  gateId: string;
}

export interface NodeStreamInput {
  listener: string;
  node: string;
  url: string;
  link: NodeLink;
  settings: () => NodeStreamSettings;
  connectTimeoutMs: number;
  backoffBaseMs: number;
  backoffCapMs: number;
  random: () => number;
  log: Logger;
  /** The stream said `hello` and may carry frames. */
  onReady: () => void;
  /** The stream left `ready` (closed, dead, shutting down). Not called when the actor is killed: watch its DOWN too. */
  onDown: () => void;
}

interface NodeStreamContext extends NodeStreamInput {
  /** Dials since the stream was last stable. */
  attempt: number;
  /** Pings sent since the last pong. */
  unanswered: number;
  readySince: number;
  lastError: string | undefined;
}

/**
 * The node stream machine:
 *
 * - `connecting`: dials `url` (`ws`), at most `connectTimeoutMs`; `open` leads to `ready`, a
 *   failure or the timeout to `backoff`.
 * - `ready`: sends `{"type":"hello","gateId"}` first, then carries frames. A ping every
 *   `pingInterval`; no pong within two intervals (two pings unanswered at the third tick)
 *   terminates the socket and backs off.
 * - `backoff`: waits a full-jitter exponential delay ({@link backoffDelay}), then dials again.
 *   The exponent counts dials since the stream was last stable ({@link NODE_STABLE_MS} ready).
 * - `closing` (on `gh.shutdown`): close 1001, then `closed` when the node answered or after
 *   {@link NODE_CLOSE_TIMEOUT_MS}.
 * - `closed`: final.
 *
 * @example
 * new NodeStreamActor({ listener: 'hub', node: 'n1', url: 'ws://127.0.0.1:7001/gate', settings, onFrame, onReady, onDown }).start();
 */
export const nodeStreamMachine = setup({
  types: { context: {} as NodeStreamContext, input: {} as NodeStreamInput, events: {} as LinkEvent | { type: 'keepalive.tick' } | { type: 'gh.shutdown' } },
  actors: {
    // A timer that lives exactly as long as the `ready` state (xstate stops it on exit).
    keepalive: fromCallback<{ type: 'keepalive.tick' }, { intervalMs: number }>(({ sendBack, input }) => {
      const t = setInterval(() => sendBack({ type: 'keepalive.tick' }), input.intervalMs);
      return () => clearInterval(t);
    }),
  },
  guards: {
    pongOverdue: ({ context }) => context.unanswered >= 2,
  },
  actions: {
    dial: ({ context, self }) => context.link.dial(context.url, (e) => self.send(e)),
    hangUp: ({ context }) => context.link.hangUp(),
    sendHello: ({ context: c }) => {
      c.link.greet(JSON.stringify({ type: 'hello', gateId: c.settings().gateId }));
    },
    ping: ({ context }) => context.link.ping(),
    countPing: assign({ unanswered: ({ context }) => context.unanswered + 1 }),
    pong: assign({ unanswered: 0 }),
    markReady: assign({ unanswered: 0, readySince: () => performance.now(), lastError: undefined }),
    notifyReady: ({ context: c }) => {
      c.log.info({ node: c.node, url: c.url, attempt: c.attempt }, 'hub node stream ready');
      c.onReady();
    },
    notifyDown: ({ context: c }) => c.onDown(),
    countAttempt: assign({ attempt: ({ context }) => context.attempt + 1 }),
    /** Leaving `ready`: a stream that was up long enough backs off from the base again. */
    settleAttempts: assign({ attempt: ({ context }) => (performance.now() - context.readySince >= NODE_STABLE_MS ? 0 : context.attempt) }),
    noteError: assign({ lastError: ({ event }) => describeLinkEvent(event as LinkEvent) }),
    noteTimeout: assign({ lastError: ({ context }) => `no connection within ${context.connectTimeoutMs} ms` }),
    noteDead: assign({ lastError: ({ context }) => `no pong within ${2 * context.settings().pingIntervalMs} ms` }),
    logLost: ({ context: c }) => c.log.warn({ node: c.node, url: c.url, reason: c.lastError }, 'hub node stream lost'),
    logRetry: ({ context: c }) => c.log.debug({ node: c.node, url: c.url, attempt: c.attempt, reason: c.lastError }, 'hub node stream: dial failed, backing off'),
    startClose: ({ context, self }) => {
      // Nothing open to close politely: finish at once.
      if (!context.link.close()) self.send({ type: 'link.closed', code: 1006, reason: '' });
    },
  },
  delays: {
    connectTimeout: ({ context }) => context.connectTimeoutMs,
    backoff: ({ context }) => backoffDelay(context.attempt, context.backoffBaseMs, context.backoffCapMs, context.random),
  },
}).createMachine({
  id: 'nodeStream',
  context: ({ input }) => ({ ...input, attempt: 0, unanswered: 0, readySince: 0, lastError: undefined }),
  initial: 'connecting',
  states: {
    connecting: {
      entry: 'dial',
      after: { connectTimeout: { target: 'backoff', actions: ['noteTimeout', 'hangUp', 'logRetry'] } },
      on: {
        'link.open': { target: 'ready', actions: 'markReady' },
        'link.error': { actions: 'noteError' },
        'link.closed': { target: 'backoff', actions: ['hangUp', 'logRetry'] },
        'gh.shutdown': { target: 'closed', actions: 'hangUp' },
      },
    },
    ready: {
      entry: ['sendHello', 'notifyReady'],
      exit: 'notifyDown',
      invoke: { src: 'keepalive', input: ({ context }) => ({ intervalMs: context.settings().pingIntervalMs }) },
      on: {
        'keepalive.tick': [
          { guard: 'pongOverdue', target: 'backoff', actions: ['noteDead', 'hangUp', 'logLost', 'settleAttempts'] },
          { actions: ['ping', 'countPing'] },
        ],
        'link.pong': { actions: 'pong' },
        'link.error': { actions: 'noteError' },
        'link.closed': { target: 'backoff', actions: ['noteError', 'hangUp', 'logLost', 'settleAttempts'] },
        'gh.shutdown': 'closing',
      },
    },
    backoff: {
      after: { backoff: { target: 'connecting', actions: 'countAttempt' } },
      on: { 'gh.shutdown': 'closed' },
    },
    closing: {
      entry: 'startClose',
      after: { [NODE_CLOSE_TIMEOUT_MS]: { target: 'closed' } },
      on: { 'link.closed': 'closed' },
    },
    closed: { type: 'final', entry: 'hangUp' },
  },
});

function describeLinkEvent(e: LinkEvent): string | undefined {
  if (e.type === 'link.error') return e.message;
  if (e.type === 'link.closed') return `closed ${e.code}${e.reason ? ` ${e.reason}` : ''}`;
  return undefined;
}

export interface NodeStreamOptions {
  /** The actor id given by the supervisor (`node:LISTENER/NODEID`). */
  id: string;
  listener: string;
  node: string;
  url: string;
  settings: () => NodeStreamSettings;
  /** Every text frame the node sends (`binary` true for a binary frame, whose text is empty). */
  onFrame: (text: string, binary: boolean) => void;
  onReady: () => void;
  onDown: () => void;
  log: Logger;
  parent?: Actor;
  connectTimeoutMs?: number;
  backoffBaseMs?: number;
  backoffCapMs?: number;
  /** For tests: the jitter's random source. */
  random?: () => number;
}

/**
 * The node stream as an actor in the tree (type `node-stream`). `sendFrame` writes to the node
 * while the stream is `ready`; frames from the node go to `onFrame` without passing through the
 * machine (one less hop per message). Its socket and timers are released on every exit,
 * including a kill or a crash.
 *
 * @example
 * const s = new NodeStreamActor({ id: 'node:hub/n1', listener: 'hub', node: 'n1', url, settings, onFrame, onReady, onDown, log }).start();
 * s.sendFrame('{"type":"presence","userId":"u1","online":true}');
 */
export class NodeStreamActor extends MachineActor<typeof nodeStreamMachine> {
  readonly node: string;
  readonly url: string;
  readonly #link: NodeLink;
  #paceTimer: NodeJS.Timeout | undefined;

  constructor(opts: NodeStreamOptions) {
    const link = new NodeLink(opts.onFrame);
    super({
      id: opts.id,
      type: 'node-stream',
      logic: nodeStreamMachine,
      parent: opts.parent,
      log: opts.log,
      release: () => link.hangUp(),
      input: {
        listener: opts.listener,
        node: opts.node,
        url: opts.url,
        link,
        settings: opts.settings,
        connectTimeoutMs: opts.connectTimeoutMs ?? NODE_CONNECT_TIMEOUT_MS,
        backoffBaseMs: opts.backoffBaseMs ?? NODE_BACKOFF_BASE_MS,
        backoffCapMs: opts.backoffCapMs ?? NODE_BACKOFF_CAP_MS,
        random: opts.random ?? Math.random,
        log: opts.log,
        onReady: opts.onReady,
        onDown: opts.onDown,
      },
    });
    this.node = opts.node;
    this.url = opts.url;
    this.#link = link;
  }

  /**
   * True while the stream is `ready`: socket open and `hello` sent. Read from the link, so it is
   * already true inside the `ready` entry (where `onReady` runs).
   */
  get ready(): boolean {
    return this.status !== 'exited' && this.#link.ready;
  }

  /** Writes a text frame to the node; false when the stream is not ready or the node is not reading. */
  sendFrame(text: string): boolean {
    return this.ready && this.#link.send(text);
  }

  /**
   * Drops the stream so that it reconnects (after a backoff) and starts a new session: for a
   * node that fell so far behind that a control frame (presence, client-gone) could not be
   * queued. A new session gets `hello` and the presence snapshot, so the node's view heals.
   */
  restartSession(): void {
    if (this.ready) this.#link.reset();
  }

  /**
   * Node pacing: stops reading the node until `caughtUp()` says the shards have caught up
   * (checked every {@link PACE_CHECK_MS}). A stream paused for longer than two ping intervals
   * misses its pongs and is restarted by its keepalive, like any stream that stops answering.
   */
  pauseUntil(caughtUp: () => boolean): void {
    if (this.#paceTimer || !this.ready) return;
    this.#link.pause();
    this.#paceTimer = setInterval(() => {
      if (this.status !== 'exited' && !caughtUp()) return;
      clearInterval(this.#paceTimer);
      this.#paceTimer = undefined;
      this.#link.resume();
    }, PACE_CHECK_MS);
  }

  protected override exit(reason: ExitReason, error?: unknown): void {
    clearInterval(this.#paceTimer);
    this.#paceTimer = undefined;
    super.exit(reason, error);
  }

  /** True while reading is paused for pacing. */
  get paused(): boolean {
    return this.#paceTimer !== undefined;
  }

  override describe(): Record<string, unknown> {
    const c = (this.ref.getSnapshot() as { context?: NodeStreamContext }).context;
    return { node: this.node, url: this.url, attempt: c?.attempt ?? 0, ...(c?.lastError && { lastError: c.lastError }) };
  }
}
