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
 * A shard's side of the hub messages from the main thread (`hub-*`): it keeps each hub
 * listener's ready nodes and hands the other messages to every incarnation of the listener that
 * may hold clients (the current one, one being detached by a reload, and retiring ones).
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

  /** Handles one hub message from the main thread. */
  route(m: HubToShard): void {
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
