import { setup } from 'xstate';
import type { Logger } from 'pino';
import { Actor } from '../runtime/actor.ts';
import { compile } from '../runtime/compiled-machine.ts';
import { startAdminServer, type AdminServer } from '../admin/server.ts';
import type { AdminRoute } from '../admin/routes.ts';
import type { AdminBackend } from '../admin/types.ts';
import type { AdminConfig } from '../config/types.ts';

type AdminState = 'binding' | 'serving' | 'closing' | 'closed';
type AdminEvent = 'bound' | 'close' | 'closed';
export const adminMachine = setup({ types: { events: {} as { type: AdminEvent } } }).createMachine({
  id: 'admin',
  initial: 'binding',
  states: {
    binding: { on: { bound: 'serving', close: 'closing', closed: 'closed' } },
    serving: { on: { close: 'closing', closed: 'closed' } },
    closing: { on: { closed: 'closed' } },
    closed: { type: 'final' },
  },
});
const table = compile<AdminState, AdminEvent>(adminMachine);

/**
 * The admin API server as an actor of the root supervisor (`admin`). It starts first and stops
 * last, so `/healthz` and `/readyz` (503) answer while the rest of the tree drains.
 *
 * @example
 * supervisorSpec.children.push({ id: 'admin', start: () => new AdminActor({ backend, log, config }).start() });
 */
export interface AdminActorOptions {
  backend: AdminBackend;
  log: Logger;
  config: () => AdminConfig;
  /** More routes (the service registry's). */
  routes?: AdminRoute[];
}

export class AdminActor extends Actor {
  #state: AdminState = table.initial;
  #server: AdminServer | undefined;
  readonly #opts: AdminActorOptions;

  constructor(opts: AdminActorOptions) {
    super('admin', 'admin');
    this.#opts = opts;
  }

  get state(): string {
    return this.#state;
  }

  get address(): { host: string; port: number } | undefined {
    return this.#server?.address;
  }

  override describe(): Record<string, unknown> {
    const a = this.#server?.address;
    return { listen: a && `${a.host}:${a.port}` };
  }

  async start(): Promise<this> {
    const cfg = this.#opts.config();
    try {
      // The server binds its own actorType; give it the actor id only.
      const log = this.#opts.log.child({ actorId: this.id });
      this.#server = await startAdminServer({ host: cfg.listen.host, port: cfg.listen.port, token: () => this.#opts.config().token, backend: this.#opts.backend, log, routes: this.#opts.routes });
    } catch (err) {
      this.exit('error', err);
      throw err;
    }
    this.#state = table.next(this.#state, 'bound')!;
    this.markRunning();
    return this;
  }

  /** Counts a restart reported by a worker-thread shard. */
  recordRestart(supervisor: string): void {
    this.#server?.metrics.recordRestart(supervisor);
  }

  protected requestStop(): boolean {
    this.#state = table.next(this.#state, 'close') ?? this.#state;
    const s = this.#server;
    if (!s) return false;
    s.close().then(
      () => this.#closed('shutdown'),
      (err: unknown) => this.#closed('error', err),
    );
    return true;
  }

  protected forceStop(): void {
    void this.#server?.destroy();
    this.#closed('killed');
  }

  #closed(reason: 'shutdown' | 'killed' | 'error', err?: unknown): void {
    this.#state = 'closed';
    this.exit(reason, err);
  }
}
