import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { setup } from 'xstate';
import type { Logger } from 'pino';
import { Actor, type TreeNode, type TreeOptions } from '../runtime/actor.ts';
import { compile } from '../runtime/compiled-machine.ts';
import { ShardError } from '../errors.ts';
import { L, type StateTable } from '../workers/state-table.ts';
import { DEFAULT_WATCHDOG_MS } from '../workers/shard-config.ts';
import type { FromShard, ShardInit, ShardResult, ToShard } from '../workers/protocol.ts';

/** Runs a shard task somewhere: a piscina worker thread, or the main thread (`workers: 0`). */
export interface ShardHost {
  /**
   * Runs the shard until it drains, fails or `signal` aborts it. Settles only once the shard's
   * code has stopped (a worker thread that crashed or was aborted has exited): what the shard
   * still counts in the state table can then be given back without racing it.
   */
  run(init: ShardInit, port: MessagePort, signal: AbortSignal): Promise<ShardResult>;
  /**
   * Whether a hung shard can be found and killed: false when the shard runs in the main thread,
   * where a watchdog would be stuck in the same loop.
   */
  readonly watchable: boolean;
}

/**
 * Per state table and shard index, the previous incarnation's hand-back of its counts. A killed
 * `ShardActor` exits at once, but its thread may run a moment longer; the next incarnation, which
 * counts in the same rows, starts only once that hand-back is done.
 */
const handBacks = new WeakMap<StateTable, Map<number, Promise<void>>>();

type ShardState = 'starting' | 'running' | 'draining' | 'down';
type ShardEvent = 'ready' | 'drain' | 'down';
export const shardMachine = setup({ types: { events: {} as { type: ShardEvent } } }).createMachine({
  id: 'shard',
  initial: 'starting',
  states: {
    starting: { on: { ready: 'running', drain: 'draining', down: 'down' } },
    running: { on: { drain: 'draining', down: 'down' } },
    draining: { on: { down: 'down' } },
    down: { type: 'final' },
  },
});
const table = compile<ShardState, ShardEvent>(shardMachine);

export interface ShardActorOptions {
  index: number;
  host: ShardHost;
  /** The init for each incarnation: it carries the current config (and resolved ports). */
  init: () => ShardInit;
  table: StateTable;
  log: Logger;
  listenerSlots: () => number[];
  onReady?: (listeners: { name: string; host: string; port: number }[]) => void;
  onMessage?: (m: FromShard) => void;
  shutdownTimeoutMs: () => number;
}

const REQUEST_TIMEOUT_MS = 5_000;
type ShardRequest = ToShard extends infer T ? (T extends { id: number } ? Omit<T, 'id'> : never) : never;

/**
 * The control plane's handle on one data-plane shard (`shard-N`). Starting it runs the shard
 * task and resolves once every listener is bound; the task's rejection (the thread crashed) or
 * failure becomes this actor's DOWN, so its supervisor restarts the shard. Graceful stop drains
 * through the `MessagePort`; a kill aborts the task, which terminates the thread.
 *
 * @example
 * const s = await new ShardActor({ index: 0, host, init, table, log, ... }).start();
 * const subtree = await s.remoteTree({ depth: 2 });
 */
export class ShardActor extends Actor {
  #state: ShardState = table.initial;
  readonly #opts: ShardActorOptions;
  readonly #log: Logger;
  readonly #abort = new AbortController();
  #port: MessagePort | undefined;
  #nextId = 1;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  #watchdog: NodeJS.Timeout | undefined;
  #watchdogMs = DEFAULT_WATCHDOG_MS;
  /** Set when the watchdog killed the thread: the task's end is then a DOWN `hung`. */
  #hungFor: number | undefined;
  /** The host runs the task (false while the start waits for the previous incarnation's hand-back). */
  #ran = false;
  #handBack!: () => void;
  readonly #handedBack = new Promise<void>((r) => (this.#handBack = r));

  constructor(opts: ShardActorOptions) {
    super(`shard-${opts.index}`, 'shard');
    this.#opts = opts;
    this.#log = opts.log.child({ actorId: this.id, actorType: this.type, shard: opts.index });
  }

  get index(): number {
    return this.#opts.index;
  }

  get state(): string {
    return this.#state;
  }

  #step(ev: ShardEvent): void {
    const next = table.next(this.#state, ev);
    if (next) this.#state = next;
  }

  /** Whether a hung thread of this shard is found and killed (not in the main thread, nor with `runtime.watchdog: 0`). */
  get watched(): boolean {
    return this.#opts.host.watchable && this.#watchdogMs > 0;
  }

  /**
   * Resolves once this incarnation's counts are settled: given back after an abnormal end, only
   * once the shard's code stopped. After a kill this comes a moment after the DOWN.
   */
  handedBack(): Promise<void> {
    return this.#handedBack;
  }

  /**
   * Runs the shard task and resolves once every listener is bound (`ready`). A previous
   * incarnation of this shard that was killed is waited for first: its counts must be given
   * back before this one counts in the same rows.
   */
  async start(): Promise<this> {
    let rows = handBacks.get(this.#opts.table);
    if (!rows) handBacks.set(this.#opts.table, (rows = new Map()));
    const previous = rows.get(this.index);
    rows.set(this.index, this.#handedBack);
    if (previous) await previous;
    if (this.status === 'exited') throw new ShardError(this.index, 'killed before it started');
    return this.#run();
  }

  #run(): Promise<this> {
    const { port1, port2 } = new MessageChannel();
    this.#port = port1;
    const init = this.#opts.init();
    this.#ran = true;
    this.#watchdogMs = init.config.watchdogMs ?? DEFAULT_WATCHDOG_MS;
    return new Promise<this>((resolve, reject) => {
      port1.on('message', (m: FromShard) => {
        if (m.type === 'ready') {
          this.#step('ready');
          this.markRunning();
          this.#opts.table.shardSetUp(this.index, true);
          this.#opts.onReady?.(m.listeners);
          this.#log.info({ listeners: m.listeners }, 'shard ready');
          this.#watch();
          resolve(this);
        } else if (m.type === 'reply') {
          const p = this.#pending.get(m.id);
          if (!p) return;
          this.#pending.delete(m.id);
          clearTimeout(p.timer);
          if (m.error) p.reject(Object.assign(new ShardError(this.index, m.error.message), m.error.code ? { code: m.error.code } : {}));
          else p.resolve(m.value);
        } else this.#opts.onMessage?.(m);
      });
      this.#opts.host.run(init, port2, this.#abort.signal).then(
        (r) => {
          const err = r.ok ? undefined : Object.assign(new ShardError(this.index, r.message ?? 'failed'), r.code ? { shardCode: r.code } : {});
          if (this.status === 'starting') reject(err ?? new ShardError(this.index, 'ended before it was ready'));
          this.#ended(err ? 'error' : this.status === 'stopping' ? 'shutdown' : 'normal', err);
        },
        (cause: unknown) => {
          const hung = this.#hungFor !== undefined;
          const why = hung ? `hung: no heartbeat for ${this.#hungFor} ms` : `crashed: ${(cause as Error)?.message ?? cause}`;
          const err = new ShardError(this.index, why, { cause });
          if (this.status === 'starting') reject(err);
          this.#ended(hung ? 'hung' : this.#abort.signal.aborted ? 'killed' : 'error', err);
        },
      );
    });
  }

  /**
   * The watchdog: the shard's thread bumps its heartbeat cell in the state table (no message);
   * a cell that has not moved for `runtime.watchdog` means a thread stuck in a loop.
   */
  #watch(): void {
    clearInterval(this.#watchdog);
    this.#watchdog = undefined;
    if (!this.watched) return;
    const t = this.#opts.table;
    let seen = t.shardBeats(this.index);
    let since = performance.now();
    this.#watchdog = setInterval(
      () => {
        const beats = t.shardBeats(this.index);
        const now = performance.now();
        if (beats !== seen) {
          seen = beats;
          since = now;
        } else if (now - since >= this.#watchdogMs) this.#hung(Math.round(now - since));
      },
      Math.max(10, Math.floor(this.#watchdogMs / 10)),
    ).unref();
  }

  #hung(silentMs: number): void {
    clearInterval(this.#watchdog);
    this.#watchdog = undefined;
    this.#hungFor = silentMs;
    this.#log.error({ silentMs, limitMs: this.#watchdogMs }, 'shard hung: no heartbeat, terminating its thread');
    // The task's rejection (once the thread has exited) becomes the DOWN `hung`.
    this.#abort.abort(new ShardError(this.index, 'hung'));
  }

  /** Sends a request to the shard and awaits its reply (bounded). */
  request<T>(m: ShardRequest): Promise<T> {
    const port = this.#port;
    if (!port || this.status === 'exited') return Promise.reject(new ShardError(this.index, 'not running'));
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new ShardError(this.index, `no reply to ${m.type} within ${REQUEST_TIMEOUT_MS} ms`));
      }, REQUEST_TIMEOUT_MS);
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      port.postMessage({ ...m, id } as ToShard);
      // A reloaded runtime.watchdog applies from the config push on.
      if (m.type === 'config' && (m.config.watchdogMs ?? DEFAULT_WATCHDOG_MS) !== this.#watchdogMs) {
        this.#watchdogMs = m.config.watchdogMs ?? DEFAULT_WATCHDOG_MS;
        if (this.#watchdog || this.status === 'running') this.#watch();
      }
    });
  }

  /** Posts a one-way message to the shard. */
  post(m: Exclude<ToShard, { id: number }>): boolean {
    if (!this.#port || this.status === 'exited') return false;
    this.#port.postMessage(m);
    return true;
  }

  /** The shard's own subtree (its supervisor, listeners, connections). */
  async remoteTree(opts: TreeOptions): Promise<TreeNode[]> {
    try {
      return [await this.request<TreeNode>({ type: 'tree', opts })];
    } catch (err) {
      return [{ id: `${this.id}:unreachable`, type: 'error', state: String((err as Error).message), status: 'exited', restarts: 0, children: [] }];
    }
  }

  protected requestStop(): boolean {
    this.#step('drain');
    this.post({ type: 'drain', timeoutMs: this.#opts.shutdownTimeoutMs() });
    return true;
  }

  protected forceStop(): void {
    // The actor is gone now; the thread a moment later (its task settles once it has exited),
    // and only then are its counts given back (#ended).
    this.#abort.abort(new ShardError(this.index, 'killed'));
    if (!this.#ran) this.#handBack();
    this.#down('killed');
  }

  /** The shard task settled: its code has stopped. Gives back what it still counts, then exits. */
  #ended(reason: 'normal' | 'shutdown' | 'killed' | 'error' | 'hung', err?: Error): void {
    if (reason !== 'normal' && reason !== 'shutdown') this.#giveBack();
    this.#handBack();
    this.#down(reason, err);
  }

  /**
   * Connections of a dead shard died with it: give their places back, count them as errors.
   * Only called once the shard's code has stopped, so that none of them counts itself down too.
   */
  #giveBack(): void {
    const t = this.#opts.table;
    for (const slot of this.#opts.listenerSlots()) {
      const n = t.listenerGet(this.index, slot, L.ACTIVE);
      if (n > 0) {
        t.listenerAdd(this.index, slot, L.ACTIVE, -n);
        t.listenerAdd(this.index, slot, L.ERROR, n);
        t.listenerRelease(slot, n);
      }
      // And its per-IP places (maxConnectionsPerIp), found by the shard tag of their entries.
      t.ipReleaseShard(slot, this.index);
    }
    // And its connections' places on their backends (least_connections and p2c read them).
    t.backendReleaseShard(this.index);
  }

  #down(reason: 'normal' | 'shutdown' | 'killed' | 'error' | 'hung', err?: Error): void {
    if (this.status === 'exited') return;
    this.#step('down');
    clearInterval(this.#watchdog);
    this.#watchdog = undefined;
    this.#opts.table.shardSetUp(this.index, false);
    for (const [, p] of this.#pending) {
      clearTimeout(p.timer);
      p.reject(new ShardError(this.index, 'shard went down'));
    }
    this.#pending.clear();
    this.#port?.close();
    this.#port = undefined;
    if (reason === 'error' || reason === 'hung') this.#log.error({ err, reason }, 'shard down');
    else this.#log.info({ reason }, 'shard stopped');
    this.exit(reason, err);
  }
}
