/**
 * The main thread's side of the HTTP metrics: every shard counts its own requests
 * (`src/http/stats.ts`) and is asked for a snapshot at scrape time; this sums them so that the
 * counters never go backwards, whatever happens to the shards between two scrapes.
 */
import { emptyHttpStats, isHttpStatsSnapshot, mergeHttpStats, type HttpStatsSnapshot } from '../http/stats.ts';

/** How long a scrape waits for a shard's snapshot before it uses the one it had. */
export const HTTP_STATS_WAIT_MS = 1_000;

/** A shard the aggregator can ask: its index and a request for its current snapshot. */
export interface HttpStatsSource {
  index: number;
  /** Resolves with the shard's snapshot; anything but a valid snapshot (or a rejection) is "no data". */
  request(): Promise<unknown>;
}

/**
 * Sums the shards' HTTP snapshots into monotonic counters.
 *
 * - It keeps each shard's **last snapshot received**. A shard that does not answer within
 *   `waitMs` (or answers nothing valid) is counted with that last snapshot: a scrape never fails
 *   and never waits more than `waitMs`.
 * - When a shard's incarnation ends (its DOWN: a crash, a hang, a drain), {@link retire} folds its
 *   last snapshot into a `retired` base that is part of every later sum, and the shard's next
 *   incarnation starts from zero on top of it. So sums only grow. What the dead incarnation
 *   counted after the last snapshot received from it (since the last scrape) is lost: it died
 *   with its thread.
 * - A reply is taken only for the incarnation it was asked of: a reply that arrives after
 *   `retire()` is dropped, so nothing is counted twice.
 *
 * @example
 * const agg = new HttpStatsAggregator();
 * shardActor.monitor(() => agg.retire(shardActor.index));
 * const total = await agg.collect(shards.map((s) => ({ index: s.index, request: () => s.request({ type: 'http-stats' }) })));
 */
export class HttpStatsAggregator {
  /** The last snapshots of incarnations that ended, summed. */
  readonly #retired: HttpStatsSnapshot = emptyHttpStats();
  /** The current incarnation's last snapshot, per shard index. */
  readonly #last = new Map<number, HttpStatsSnapshot>();
  /** Bumped by each retire(): a reply asked of an earlier incarnation is dropped. */
  readonly #generation = new Map<number, number>();
  readonly #waitMs: number;

  /**
   * @param opts.waitMs how long {@link collect} waits for the shards (default {@link HTTP_STATS_WAIT_MS}).
   *
   * @example
   * const agg = new HttpStatsAggregator({ waitMs: 500 });
   */
  constructor(opts: { waitMs?: number } = {}) {
    this.#waitMs = opts.waitMs ?? HTTP_STATS_WAIT_MS;
  }

  /**
   * The incarnation of shard `index` is over: its last snapshot joins the retired base, and its
   * next incarnation counts from zero on top of it.
   *
   * @example
   * shard.monitor(() => agg.retire(shard.index));
   */
  retire(index: number): void {
    this.#generation.set(index, (this.#generation.get(index) ?? 0) + 1);
    const last = this.#last.get(index);
    if (last) mergeHttpStats(this.#retired, last);
    this.#last.delete(index);
  }

  /**
   * Records `value` as shard `index`'s latest snapshot (an invalid value is ignored and the
   * previous one kept). Returns whether it was taken. `collect` calls it; exported for callers
   * that receive snapshots another way.
   *
   * @example
   * agg.record(0, reply.value);
   */
  record(index: number, value: unknown): boolean {
    if (!isHttpStatsSnapshot(value)) return false;
    this.#last.set(index, value);
    return true;
  }

  /**
   * The sum now: the retired base plus every shard's last snapshot (a fresh object the caller
   * owns).
   *
   * @example
   * const total = agg.total();
   */
  total(): HttpStatsSnapshot {
    const total = emptyHttpStats();
    mergeHttpStats(total, this.#retired);
    for (const s of this.#last.values()) mergeHttpStats(total, s);
    return total;
  }

  /**
   * Asks every source for its snapshot at once, waits up to `waitMs` for the answers, records
   * the valid ones, and returns {@link total}. It never rejects.
   *
   * @example
   * res.end(render(await agg.collect(sources)));
   */
  async collect(sources: readonly HttpStatsSource[]): Promise<HttpStatsSnapshot> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, this.#waitMs)));
    try {
      await Promise.race([deadline, Promise.all(sources.map((s) => this.#ask(s)))]);
    } finally {
      clearTimeout(timer);
    }
    return this.total();
  }

  async #ask(source: HttpStatsSource): Promise<void> {
    const generation = this.#generation.get(source.index) ?? 0;
    let value: unknown;
    try {
      value = await source.request();
    } catch {
      return; // no data: the last snapshot stands
    }
    // A late answer is still the freshest data of its incarnation, unless that one has ended.
    if ((this.#generation.get(source.index) ?? 0) === generation) this.record(source.index, value);
  }
}
