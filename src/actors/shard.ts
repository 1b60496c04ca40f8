import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { setup } from 'xstate';
import type { Logger } from 'pino';
import { Actor, type TreeNode, type TreeOptions } from '../runtime/actor.ts';
import { compile } from '../runtime/compiled-machine.ts';
import { ShardError } from '../errors.ts';
import { L, type StateTable } from '../workers/state-table.ts';
import type { FromShard, ShardInit, ShardResult, ToShard } from '../workers/protocol.ts';

/** Runs a shard task somewhere: a piscina worker thread, or the main thread (`workers: 0`). */
export interface ShardHost {
  run(init: ShardInit, port: MessagePort, signal: AbortSignal): Promise<ShardResult>;
}

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

  start(): Promise<this> {
    const { port1, port2 } = new MessageChannel();
    this.#port = port1;
    const init = this.#opts.init();
    return new Promise<this>((resolve, reject) => {
      port1.on('message', (m: FromShard) => {
        if (m.type === 'ready') {
          this.#step('ready');
          this.markRunning();
          this.#opts.table.shardSetUp(this.index, true);
          this.#opts.onReady?.(m.listeners);
          this.#log.info({ listeners: m.listeners }, 'shard ready');
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
          this.#down(err ? 'error' : this.status === 'stopping' ? 'shutdown' : 'normal', err);
        },
        (cause: unknown) => {
          const err = new ShardError(this.index, `crashed: ${(cause as Error)?.message ?? cause}`, { cause });
          if (this.status === 'starting') reject(err);
          this.#down(this.#abort.signal.aborted ? 'killed' : 'error', err);
        },
      );
    });
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
    this.#abort.abort(new ShardError(this.index, 'killed'));
    this.#down('killed');
  }

  #down(reason: 'normal' | 'shutdown' | 'killed' | 'error', err?: Error): void {
    if (this.status === 'exited') return;
    this.#step('down');
    const t = this.#opts.table;
    t.shardSetUp(this.index, false);
    // Connections of a dead shard died with it: give their places back, count them as errors.
    for (const slot of this.#opts.listenerSlots()) {
      const n = t.listenerGet(this.index, slot, L.ACTIVE);
      if (n > 0 && reason !== 'normal' && reason !== 'shutdown') {
        t.listenerAdd(this.index, slot, L.ACTIVE, -n);
        t.listenerAdd(this.index, slot, L.ERROR, n);
        t.listenerRelease(slot, n);
      }
      // And its per-IP places (maxConnectionsPerIp), found by the shard tag of their entries.
      if (reason !== 'normal' && reason !== 'shutdown') t.ipReleaseShard(slot, this.index);
    }
    // And its connections' places on their backends (least_connections and p2c read them).
    if (reason !== 'normal' && reason !== 'shutdown') t.backendReleaseShard(this.index);
    for (const [, p] of this.#pending) {
      clearTimeout(p.timer);
      p.reject(new ShardError(this.index, 'shard went down'));
    }
    this.#pending.clear();
    this.#port?.close();
    this.#port = undefined;
    if (reason === 'error') this.#log.error({ err }, 'shard down');
    else this.#log.info({ reason }, 'shard stopped');
    this.exit(reason, err);
  }
}
