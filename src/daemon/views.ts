import type { TreeNode, TreeOptions } from '../runtime/actor.ts';
import type { Supervisor } from '../supervisors/supervisor.ts';
import type { ShardActor } from '../actors/shard.ts';
import { B, HUB_DROPS, L, LB, OUTCOMES, type StateTable } from '../workers/state-table.ts';
import type { GatehouseConfig } from '../config/types.ts';
import type { ListenerCounters, UpstreamsView } from '../admin/types.ts';

/**
 * Read-only views of the running daemon for the admin API: the actor tree merged across shards,
 * listener counters and upstream state from the shared state table.
 */

/**
 * The root's tree with each shard's subtree grafted in (asked of its thread, bounded). The type
 * filter runs on the merged tree: locally a shard has no listener below it yet.
 *
 * @example
 * const tree = await mergedTree(root, shards, { depth: 3, limit: 50 });
 */
export async function mergedTree(root: Supervisor, shards: ShardActor[], opts: TreeOptions): Promise<TreeNode> {
  const node = root.tree({ ...opts, type: undefined });
  const byId = new Map(shards.map((s) => [s.id, s]));
  const graft = async (n: TreeNode, level: number): Promise<void> => {
    const s = n.type === 'shard' ? byId.get(n.id) : undefined;
    if (s && (opts.depth === undefined || level < opts.depth)) {
      const sub = opts.depth === undefined ? opts : { ...opts, depth: opts.depth - level - 1 };
      n.children = await s.remoteTree(sub);
      delete n.truncated;
      return;
    }
    await Promise.all(n.children.map((c) => graft(c, level + 1)));
  };
  await graft(node, 0);
  return opts.type ? (pruneByType(node, opts.type) ?? { ...node, children: [] }) : node;
}

/** Keeps the nodes of `type` and their ancestors. */
export function pruneByType(n: TreeNode, type: string): TreeNode | undefined {
  const children = n.children.map((c) => pruneByType(c, type)).filter((c): c is TreeNode => c !== undefined);
  if (n.type !== type && children.length === 0) return undefined;
  return { ...n, children };
}

/** Per shard, per listener counters (`gatehouse_connections_*`, `gatehouse_bytes_total`). */
export function listenerCounters(table: StateTable, slots: [string, number][], shardCount: number): ListenerCounters[] {
  const out: ListenerCounters[] = [];
  for (const [name, slot] of slots) {
    for (let shard = 0; shard < shardCount; shard++) {
      const outcomes: Record<string, number> = {};
      for (const [o, f] of Object.entries(OUTCOMES)) outcomes[o] = table.listenerGet(shard, slot, f);
      out.push({
        listener: name,
        shard,
        active: table.listenerGet(shard, slot, L.ACTIVE),
        outcomes,
        bytesIn: table.bytesGet(shard, slot, LB.BYTES_IN),
        bytesOut: table.bytesGet(shard, slot, LB.BYTES_OUT),
      });
    }
  }
  return out;
}

/** The hub's frame and drop counters of the shards, summed over shards and the given hub listener slots. */
export function hubCounters(table: StateTable, hubSlots: number[]): { messages: { clientToNode: number; nodeToClient: number }; dropped: Record<string, number> } {
  const messages = { clientToNode: 0, nodeToClient: 0 };
  const dropped: Record<string, number> = {};
  for (const reason of Object.keys(HUB_DROPS)) dropped[reason] = 0;
  for (const slot of hubSlots) {
    messages.clientToNode += table.listenerSum(slot, L.HUB_IN);
    messages.nodeToClient += table.listenerSum(slot, L.HUB_OUT);
    for (const [reason, field] of Object.entries(HUB_DROPS)) dropped[reason]! += table.listenerSum(slot, field);
  }
  return { messages, dropped };
}

const BREAKER = ['closed', 'open', 'half_open'] as const;
/** B.ADMIN as `/upstreams` shows it. */
export const ADMIN_STATE = ['ready', 'drain', 'maint'] as const;

/** The weight in force: one set through the admin API (stored plus one), else the config's. */
export function effectiveWeight(table: StateTable, slot: number, configured: number): number {
  const set = table.backendGet(slot, B.WEIGHT);
  return set > 0 ? set - 1 : configured;
}

/** `GET /upstreams`: each backend's health, breaker, weight and active connections. */
export function upstreamsView(cfg: GatehouseConfig, table: StateTable, slotOf: (upstream: string, address: string) => number): UpstreamsView {
  return {
    upstreams: cfg.upstreams.map((u) => ({
      name: u.name,
      balance: u.balance,
      backends: u.backends.map((b) => {
        const slot = slotOf(u.name, b.address);
        return {
          address: b.address,
          healthy: table.backendGet(slot, B.HEALTHY) === 1,
          breaker: BREAKER[table.backendGet(slot, B.BREAKER)] ?? 'closed',
          activeConnections: table.backendGet(slot, B.ACTIVE),
          weight: effectiveWeight(table, slot, b.weight),
          admin: ADMIN_STATE[table.backendGet(slot, B.ADMIN)] ?? 'ready',
        };
      }),
    })),
  };
}
