import net from 'node:net';

/** The outcome of one echo round trip through the gateway. */
export interface RoundTrip {
  seq: number;
  /** performance.now() in the test process. */
  startedAt: number;
  endedAt: number;
  /** undefined when the whole echo came back (and the connection then closed cleanly or not). */
  error?: string;
}

/**
 * One client connection: connect, write `payload`, read the whole echo back, then end and wait
 * for the gateway's close. It succeeds once the echo is complete and identical (an error after
 * that, while closing, does not undo it); it fails on a reset, a close before the echo is
 * complete, a wrong echo, or `timeoutMs`. Resolves with undefined on success, else what went wrong.
 *
 * @example
 * expect(await echoRoundTrip(port, Buffer.from('hello'))).toBeUndefined();
 */
export function echoRoundTrip(port: number, payload: Buffer, timeoutMs = 5_000): Promise<string | undefined> {
  return new Promise((resolve) => {
    const c = net.connect({ port, host: '127.0.0.1' });
    const chunks: Buffer[] = [];
    let got = 0;
    let echoed = false;
    let settled = false;
    const finish = (error?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      c.destroy();
      resolve(error);
    };
    const timer = setTimeout(() => finish(echoed ? 'no close after the echo' : `timeout after ${got} of ${payload.length} bytes`), timeoutMs);
    c.on('connect', () => c.write(payload));
    c.on('data', (d: Buffer) => {
      chunks.push(d);
      got += d.length;
      if (got < payload.length || echoed) return;
      if (got > payload.length || !Buffer.concat(chunks).equals(payload)) return finish(`wrong echo (${got} bytes)`);
      echoed = true;
      c.end();
    });
    c.on('error', (err: NodeJS.ErrnoException) => {
      if (!echoed) finish(`${err.code ?? err.message} after ${got} of ${payload.length} bytes`);
    });
    c.on('close', () => finish(echoed ? undefined : `closed after ${got} of ${payload.length} bytes`));
  });
}

export interface LoadOptions {
  port: number;
  /** Connections in flight at once (each worker runs its round trips one after the other). */
  parallel: number;
  /** At most this many round trips in all. */
  max: number;
  /** And for at most this long. */
  deadlineMs: number;
  payloadBytes?: number;
  timeoutMs?: number;
}

/**
 * Bounded client load: `parallel` workers doing echo round trips until `stop()`, `max` round
 * trips, or the deadline. Every round trip is recorded with its times, failures in full.
 * {@link Load.waitFor} is checked after each round trip: tests wait on the load's own progress.
 *
 * @example
 * const load = new Load({ port, parallel: 4, max: 10_000, deadlineMs: 20_000 });
 * onTestFinished(() => load.stop());
 * await load.progress(100);
 * await load.stop();
 * expect(load.failures).toEqual([]);
 */
export class Load {
  readonly failures: RoundTrip[] = [];
  started = 0;
  ok = 0;
  readonly #opts: LoadOptions;
  #stopped = false;
  #ended = false;
  readonly #deadline: number;
  readonly #waiters = new Set<{ pred: () => boolean; settle: (err?: Error) => void }>();
  readonly done: Promise<void>;

  constructor(opts: LoadOptions) {
    this.#opts = opts;
    this.#deadline = performance.now() + opts.deadlineMs;
    this.done = Promise.all(Array.from({ length: opts.parallel }, () => this.#worker())).then(() => {
      this.#ended = true;
      this.#check();
    });
  }

  get finished(): number {
    return this.ok + this.failures.length;
  }

  /** Why the load ended by itself, if it did. */
  get exhausted(): string | undefined {
    if (this.started >= this.#opts.max) return `all ${this.#opts.max} round trips used`;
    if (performance.now() > this.#deadline) return `deadline of ${this.#opts.deadlineMs} ms passed`;
    return undefined;
  }

  async #worker(): Promise<void> {
    const size = this.#opts.payloadBytes ?? 64;
    while (!this.#stopped && this.started < this.#opts.max && performance.now() < this.#deadline) {
      const seq = this.started++;
      const head = `rt-${seq}-`;
      const payload = Buffer.from(head.padEnd(Math.max(size, head.length), 'x'));
      const startedAt = performance.now();
      const error = await echoRoundTrip(this.#opts.port, payload, this.#opts.timeoutMs);
      if (error === undefined) this.ok++;
      else this.failures.push({ seq, startedAt, endedAt: performance.now(), error });
      this.#check();
    }
  }

  #check(): void {
    for (const w of this.#waiters) {
      let met = false;
      try {
        met = w.pred();
      } catch (err) {
        w.settle(err as Error);
        continue;
      }
      if (met) w.settle();
      else if (this.#ended) w.settle(new Error(`the load ended (${this.exhausted ?? 'stopped'}) after ${this.finished} round trips`));
    }
  }

  /** Resolves once `pred` holds, checked after every round trip; rejects after `timeoutMs` or when the load ends first. */
  waitFor(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
    if (pred()) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const w = {
        pred,
        settle: (err?: Error) => {
          this.#waiters.delete(w);
          clearTimeout(timer);
          if (err) reject(new Error(`${what}: ${err.message}`));
          else resolve();
        },
      };
      const timer = setTimeout(() => w.settle(new Error(`not within ${timeoutMs} ms (${this.finished} round trips done)`)), timeoutMs);
      this.#waiters.add(w);
      if (this.#ended) this.#check();
    });
  }

  /** Waits until `n` more round trips have finished. */
  progress(n: number, timeoutMs = 10_000): Promise<void> {
    const target = this.finished + n;
    return this.waitFor(() => this.finished >= target, timeoutMs, `${n} more round trips`);
  }

  /** Stops starting round trips and waits for those in flight. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await this.done;
  }
}

