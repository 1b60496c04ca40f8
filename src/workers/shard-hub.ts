import type { HubListenerActor } from '../actors/hub-listener.ts';
import type { HubToShard } from '../hub/messages.ts';
import type { FromShard } from './protocol.ts';
import type { StateTable } from './state-table.ts';

/**
 * The hub's data plane (ws, jose and the client proxies) is loaded by the first hub listener a
 * shard starts: a TCP-only shard does not carry it in its heap (a bigger heap makes every
 * full collection on the bulk path slower).
 */
let hubModule: typeof import('../actors/hub-listener.ts') | undefined;

/** Loads the hub listener's module once per thread. */
export async function loadHub(): Promise<typeof import('../actors/hub-listener.ts')> {
  hubModule ??= await import('../actors/hub-listener.ts');
  return hubModule;
}

/** True for a {@link HubListenerActor}; false without loading the hub module when none was started. */
export function isHub(a: unknown): a is HubListenerActor {
  return hubModule !== undefined && a instanceof hubModule.HubListenerActor;
}

/**
 * How long one turn of a shard's event loop spends on hub messages before the rest wait for the
 * next turn. A MessagePort hands over every message that arrives while its queue is not empty
 * (up to a thousand) in one go: under a steady stream of broadcasts (each a write to every
 * client) the thread would never get to its timers and sockets, so its heartbeat would stop (the
 * watchdog kills it after `runtime.watchdog`), and neither socket drains nor pings would be served.
 */
export const HUB_TURN_BUDGET_MS = 5;

/**
 * At most this many broadcasts waiting back to back are written together: each client gets them
 * in one write (a socket write per frame and client is most of a broadcast's cost).
 */
export const HUB_BROADCAST_BATCH = 16;

/**
 * A shard's side of the hub messages from the main thread (`hub-*`): it keeps each hub
 * listener's ready nodes and hands the other messages to every incarnation of the listener that
 * may hold clients (the current one, one being detached by a reload, and retiring ones).
 *
 * Messages are handled as they come until a turn of the event loop has spent
 * {@link HUB_TURN_BUDGET_MS} on them; later ones wait, in order, for the next turn (a
 * `setImmediate`), so timers and socket I/O run between. Broadcasts that waited back to back
 * (for one listener, up to {@link HUB_BROADCAST_BATCH}) are written together, one write per
 * client. The node pacing still holds: a `hub-deliver` counts as done once handled. Other shard
 * messages (tree, counts, config, drain) are not held back, so they may overtake waiting ones.
 *
 * @example
 * const hub = new ShardHubRoutes(0, table, post, () => [...sup.children(), ...retiring]);
 * hub.route({ type: 'hub-nodes', listener: 'hub', ready: ['n1'] });
 * hub.readyNodesOf('hub')(); // ['n1']
 */
export class ShardHubRoutes {
  readonly #shard: number;
  readonly #table: StateTable;
  readonly #post: (m: FromShard) => void;
  readonly #actors: () => Iterable<unknown>;
  /**
   * Each hub listener's ready nodes, as the main thread last said (`hub-nodes`). Kept here, not in
   * the listener, so a restarted or moved incarnation starts with them.
   */
  readonly #nodes: Map<string, readonly string[]>;

  /** Messages waiting for a turn, oldest at `#head`. */
  #backlog: (HubToShard | undefined)[] = [];
  #head = 0;
  /** When this turn's budget started; -1 when no turn is scheduled (a turn is scheduled exactly while it is >= 0). */
  #turnStart = -1;

  constructor(shard: number, table: StateTable, post: (m: FromShard) => void, actors: () => Iterable<unknown>, nodes: Record<string, string[]> = {}) {
    this.#shard = shard;
    this.#table = table;
    this.#post = post;
    this.#actors = actors;
    this.#nodes = new Map(Object.entries(nodes));
  }

  /** What a hub listener reads for its ready nodes (by name: a new incarnation sees the same). */
  readyNodesOf(name: string): () => readonly string[] {
    return () => this.#nodes.get(name) ?? [];
  }

  /** Forgets the nodes of hub listeners that are not in `keep` any more (after a reload). */
  retain(keep: (name: string) => boolean): void {
    for (const name of this.#nodes.keys()) if (!keep(name)) this.#nodes.delete(name);
  }

  /** Handles one hub message from the main thread, now or (past this turn's budget) at the next turn, in order. */
  route(m: HubToShard): void {
    if (this.#head < this.#backlog.length) {
      this.#backlog.push(m);
      return;
    }
    const now = performance.now();
    if (this.#turnStart < 0) {
      this.#turnStart = now;
      setImmediate(this.#onTurn);
    } else if (now - this.#turnStart >= HUB_TURN_BUDGET_MS) {
      this.#backlog.push(m);
      return;
    }
    this.#handle(m);
  }

  /** A new turn: handles waiting messages within the budget, and schedules the next turn while some are left. */
  readonly #onTurn = (): void => {
    this.#turnStart = performance.now();
    const q = this.#backlog;
    try {
      while (this.#head < q.length && performance.now() - this.#turnStart < HUB_TURN_BUDGET_MS) {
        const m = q[this.#head]!;
        if (m.type === 'hub-deliver' && m.to.kind === 'all') this.#broadcasts(q, m.listener);
        else {
          q[this.#head++] = undefined;
          this.#handle(m);
        }
      }
    } finally {
      if (this.#head < q.length) {
        if (this.#head >= 1024 && this.#head * 2 >= q.length) {
          this.#backlog = q.slice(this.#head);
          this.#head = 0;
        }
        setImmediate(this.#onTurn);
      } else {
        this.#backlog = [];
        this.#head = 0;
        this.#turnStart = -1;
      }
    }
  };

  /** The broadcasts to `listener` waiting back to back at `#head` (at least one): delivered together. */
  #broadcasts(q: (HubToShard | undefined)[], listener: string): void {
    const batch: Extract<HubToShard, { type: 'hub-deliver' }>[] = [];
    while (this.#head < q.length && batch.length < HUB_BROADCAST_BATCH) {
      const m = q[this.#head]!;
      if (m.type !== 'hub-deliver' || m.to.kind !== 'all' || m.listener !== listener) break;
      batch.push(m);
      q[this.#head++] = undefined;
    }
    if (batch.length === 1) {
      this.#handle(batch[0]!);
      return;
    }
    const delivered = batch.map(() => 0);
    for (const l of this.#listeners(listener)) {
      const n = l.broadcast(batch.map((m) => m.frame));
      for (let i = 0; i < n.length; i++) delivered[i]! += n[i]!;
    }
    for (let i = 0; i < batch.length; i++) {
      const ack = batch[i]!.ack;
      if (ack !== undefined) this.#post({ type: 'hub-delivered', listener, ack, delivered: delivered[i]! });
      this.#table.hubDeliverDone(this.#shard);
    }
  }

  #handle(m: HubToShard): void {
    switch (m.type) {
      case 'hub-nodes':
        this.#nodes.set(m.listener, [...m.ready]);
        break;
      case 'hub-resync':
        for (const l of this.#listeners(m.listener)) l.resync();
        break;
      case 'hub-deliver': {
        let delivered = 0;
        for (const l of this.#listeners(m.listener)) delivered += l.deliver(m.to, m.frame);
        // Answered also when this shard has no such listener (the main thread counts every shard's answer).
        if (m.ack !== undefined) this.#post({ type: 'hub-delivered', listener: m.listener, ack: m.ack, delivered });
        this.#table.hubDeliverDone(this.#shard);
        break;
      }
      case 'hub-node-down':
        for (const l of this.#listeners(m.listener)) l.nodeDown(m.node);
        break;
      case 'hub-reply':
        for (const l of this.#listeners(m.listener)) if (l.reply(m.clientId, m.frame)) break;
        break;
      case 'hub-admitted':
        for (const l of this.#listeners(m.listener)) l.admitted(m.clientId, m.ok, m.history);
        break;
    }
  }

  #listeners(name: string): Set<HubListenerActor> {
    const out = new Set<HubListenerActor>();
    for (const a of this.#actors()) if (isHub(a) && a.name === name) out.add(a);
    return out;
  }
}
