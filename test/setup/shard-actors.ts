import type { TreeNode } from '../../src/runtime/actor.ts';
import { live } from '../../src/runtime/live.ts';
import type { ShardActor } from '../../src/actors/shard.ts';

/**
 * The actors inside data-plane shards that run in worker threads. This thread's live set holds
 * only the `ShardActor` handle of such a shard; its supervisor, listeners and connections live in
 * the worker's own live set. While the shard runs they are asked for through its `tree` request
 * (the one `gatehouse tree` uses), which names each actor, so that a connection actor whose DOWN
 * never came is caught before the shard's stop would take it down silently with the thread.
 */

/** One actor inside a shard, as its tree node names it. */
export interface ShardInsideActor {
  shard: string;
  id: string;
  type: string;
  state: string;
  status: string;
}

/** The ids of the actors inside each running shard at one moment. */
export type ShardSnapshot = ReadonlyMap<ShardActor, ReadonlySet<string>>;

// Duck-typed rather than `instanceof`, so the set-up file does not load the shard module (and
// its imports) before every test file.
function isShard(a: unknown): a is ShardActor {
  const s = a as Partial<ShardActor>;
  return s.type === 'shard' && typeof s.request === 'function' && s.status !== 'exited';
}

/** The shard actors of this thread that can still be asked. */
export function liveShards(): ShardActor[] {
  return live.list().filter(isShard);
}

function flatten(shard: string, n: TreeNode, out: ShardInsideActor[]): void {
  out.push({ shard, id: n.id, type: n.type, state: n.state, status: n.status });
  for (const c of n.children) flatten(shard, c, out);
}

/**
 * The actors inside `shard`, or an error when it does not answer (within the shard's own 5 s
 * request deadline). A shard running in this thread (`workers: 0`) answers too; its actors are
 * then also in this thread's live set.
 */
export async function actorsInside(shard: ShardActor): Promise<ShardInsideActor[] | Error> {
  try {
    const root = await shard.request<TreeNode>({ type: 'tree', opts: {} });
    const out: ShardInsideActor[] = [];
    flatten(shard.id, root, out);
    return out;
  } catch (err) {
    return err as Error;
  }
}

/**
 * Records the actors inside every running shard (for a baseline).
 *
 * @example
 * const before = await shardSnapshot();
 */
export async function shardSnapshot(): Promise<ShardSnapshot> {
  const snap = new Map<ShardActor, ReadonlySet<string>>();
  await Promise.all(
    liveShards().map(async (s) => {
      const inside = await actorsInside(s);
      snap.set(s, new Set(inside instanceof Error ? [] : inside.map((a) => a.id)));
    }),
  );
  return snap;
}

/**
 * The actors inside running shards that were not there in `before`: every actor of a shard
 * started since, and the new ones of a shard that was already running. A shard that does not
 * answer is returned as an error, since what it holds cannot be checked.
 *
 * @example
 * const before = await shardSnapshot();
 * // ... open and close connections through the shard
 * expect(await newInsideShards(before)).toEqual([]);
 */
export async function newInsideShards(before: ShardSnapshot): Promise<(ShardInsideActor | { shard: string; error: Error })[]> {
  const found = await Promise.all(
    liveShards().map(async (s) => {
      const inside = await actorsInside(s);
      if (inside instanceof Error) return s.status === 'exited' ? [] : [{ shard: s.id, error: inside }];
      const known = before.get(s);
      return inside.filter((a) => !known?.has(a.id));
    }),
  );
  return found.flat();
}
