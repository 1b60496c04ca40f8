import os from 'node:os';
import type { MessagePort, Worker } from 'node:worker_threads';
import { Piscina } from 'piscina';
import type { Logger } from 'pino';
import { runShard } from './shard-runtime.ts';
import { trackResource, trackWorker, type WorkerLike } from '../runtime/resources.ts';
import type { ShardHost } from '../actors/shard.ts';
import type { ShardInit, ShardResult } from './protocol.ts';

/**
 * The young generation of a shard thread, in MB (V8 counts 3 semi-spaces, so 12 is a 4 MiB
 * semi-space). Left to V8, a worker's semi-spaces grow while thousands of connections are set up
 * and their pages stay resident, which costs idle-connection memory; why 4 MiB and not less is in
 * docs/benchmarks.md.
 */
export const SHARD_YOUNG_GENERATION_MB = 12;

/**
 * Worker-thread shards hosted by piscina: one long-running shard task per thread, in a pool of
 * their own (a piscina worker parks its event loop between tasks, and piscina is tuned for task
 * queues: nothing else may run on these threads). piscina replaces a thread that crashed; it
 * re-runs nothing by itself, which is the ShardActor's supervisor's job.
 *
 * @example
 * const host = new PiscinaShardHost(2, log);
 * await host.run(init, port2, signal); // resolves when the shard drained, rejects if it crashed
 * await host.close();
 */
export class PiscinaShardHost implements ShardHost {
  readonly pool: Piscina;
  readonly watchable = true;
  #closed: Promise<void> | undefined;
  readonly #log: Logger;
  /**
   * The pool's threads that have not exited yet, by thread id. piscina drops a thread from
   * `pool.threads` as soon as it aborts its task, before the thread has really stopped.
   */
  readonly #threads = new Map<number, Worker>();

  constructor(threads: number, log: Logger) {
    this.#log = log;
    this.pool = new Piscina({
      filename: new URL('./shard.worker.ts', import.meta.url).href,
      minThreads: threads,
      maxThreads: threads,
      concurrentTasksPerWorker: 1,
      idleTimeout: Number.POSITIVE_INFINITY,
      // The task never ends while the shard runs; between tasks keep the loop alive (no Atomics.wait).
      atomics: 'disabled',
      maxQueue: threads,
      env: process.env,
      resourceLimits: { maxYoungGenerationSizeMb: SHARD_YOUNG_GENERATION_MB },
    });
    this.pool.on('error', (err: unknown) => log.error({ err }, 'shard pool error'));
    // Emitted before piscina hands the new thread a task, so every task's thread is known here.
    this.pool.on('workerCreate', () => {
      for (const w of this.pool.threads) {
        const id = w.threadId;
        if (this.#threads.has(id)) continue;
        this.#threads.set(id, w);
        w.once('exit', () => this.#threads.delete(id));
        trackWorker(w as WorkerLike, 'shard thread');
      }
    });
    this.#untrack = trackResource('worker pool', 'shards');
  }
  readonly #untrack: () => void;

  /**
   * Runs the shard task. When it rejects (the thread crashed, or `signal` aborted it), the
   * rejection is passed on only once the thread has exited: piscina rejects an aborted task first
   * and terminates its thread after, and until the thread is gone its connections may still count
   * themselves down.
   */
  async run(init: ShardInit, port: MessagePort, signal: AbortSignal): Promise<ShardResult> {
    // The task writes its thread id here first thing, so the host knows which thread to wait for.
    const thread = new Int32Array(new SharedArrayBuffer(4));
    try {
      return (await this.pool.run({ init, port, thread }, { transferList: [port as never], signal })) as ShardResult;
    } catch (err) {
      await this.#exitOf(Atomics.load(thread, 0), init.shard);
      throw err;
    }
  }

  /** Resolves when the thread has exited (at once if it has, or never ran the task). */
  #exitOf(threadId: number, shard: number): Promise<void> {
    const w = threadId === 0 ? undefined : this.#threads.get(threadId);
    if (!w) return Promise.resolve();
    return new Promise<void>((resolve) => {
      // terminate() stops JavaScript at its next interrupt check; this bound is for the unforeseen.
      const timer = setTimeout(() => {
        w.off('exit', done);
        this.#log.error({ shard, threadId, waitedMs: THREAD_EXIT_WAIT_MS }, 'shard thread did not exit: giving its counts back anyway');
        resolve();
      }, THREAD_EXIT_WAIT_MS);
      const done = (): void => {
        clearTimeout(timer);
        resolve();
      };
      w.once('exit', done);
    });
  }

  /** Terminates every thread (after the shards have drained). Idempotent. */
  close(): Promise<void> {
    this.#closed ??= this.pool.destroy().finally(this.#untrack);
    return this.#closed;
  }
}

/** How long a host waits for an aborted or crashed shard thread to exit. */
const THREAD_EXIT_WAIT_MS = 10_000;

/**
 * `workers: 0`: the data plane runs in the main thread (tests, debugging). The shard's promise
 * settles once its code has stopped (it kills what is left before settling). Not watchable: a
 * watchdog would run on the very thread that hangs.
 */
export class InThreadShardHost implements ShardHost {
  readonly watchable = false;
  readonly #log: Logger;
  constructor(log: Logger) {
    this.#log = log;
  }
  run(init: ShardInit, port: MessagePort, signal: AbortSignal): Promise<ShardResult> {
    return runShard(init, port, { log: this.#log.child({ shard: init.shard }), inThread: true, signal });
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** SO_REUSEPORT is Linux (and some BSDs) only; elsewhere the data plane runs in the main thread. */
export function reusePortSupported(): boolean {
  return os.platform() === 'linux' || os.platform() === 'freebsd';
}
