/**
 * The one error catalogue. Every error Gatehouse raises on purpose is a `GatehouseError` with a
 * stable `code`; callers and tests match on `err.code`, never on the message.
 * `docs/errors.md` has one row per code.
 *
 * @example
 * try { await supervisor.start(); } catch (err) {
 *   if (err instanceof GatehouseError && err.code === 'GH_ERR_SUPERVISOR_SPEC') { ... }
 * }
 */
export abstract class GatehouseError extends Error {
  abstract readonly code: string;
  toJSON(): { code: string; message: string } {
    return { code: this.code, message: this.message };
  }
}

/** A supervisor's child specs are invalid; nothing was started. */
export class SupervisorSpecError extends GatehouseError {
  readonly code = 'GH_ERR_SUPERVISOR_SPEC';
  constructor(supervisor: string, key: string, message: string) {
    super(`supervisor ${supervisor}: ${key}: ${message}`);
    this.name = 'SupervisorSpecError';
  }
}

/** A supervisor restarted its children more than `maxRestarts` times within `periodMs`. */
export class SupervisorIntensityError extends GatehouseError {
  readonly code = 'GH_ERR_SUPERVISOR_INTENSITY';
  constructor(supervisor: string, maxRestarts: number, periodMs: number, options?: ErrorOptions) {
    super(`supervisor ${supervisor} reached its restart intensity (${maxRestarts} in ${periodMs} ms)`, options);
    this.name = 'SupervisorIntensityError';
  }
}

/** A child failed to start. */
export class ChildStartError extends GatehouseError {
  readonly code = 'GH_ERR_CHILD_START';
  constructor(supervisor: string, child: string, options?: ErrorOptions) {
    super(`supervisor ${supervisor}: child ${child} failed to start`, options);
    this.name = 'ChildStartError';
  }
}

/** The configuration is invalid. `issues` has one entry per problem, with file, line and key path. */
export class ConfigError extends GatehouseError {
  readonly code = 'GH_ERR_CONFIG';
  readonly issues: ConfigIssue[];
  constructor(issues: ConfigIssue[]) {
    super(issues.map(formatConfigIssue).join('\n'));
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

export interface ConfigIssue {
  file: string;
  line: number;
  col: number;
  path: string;
  message: string;
}

export function formatConfigIssue(i: ConfigIssue): string {
  return `${i.file}:${i.line}:${i.col} ${i.path || '(root)'}: ${i.message}`;
}

/** A listener could not bind its address. */
export class ListenError extends GatehouseError {
  readonly code = 'GH_ERR_LISTEN';
  constructor(listener: string, address: string, options?: ErrorOptions) {
    super(`listener ${listener} could not listen on ${address}`, options);
    this.name = 'ListenError';
  }
}

/** A worker-thread shard failed or exited. */
export class ShardError extends GatehouseError {
  readonly code = 'GH_ERR_SHARD';
  constructor(shard: number, message: string, options?: ErrorOptions) {
    super(`shard ${shard}: ${message}`, options);
    this.name = 'ShardError';
  }
}

/** A custom actor module could not be loaded or does not export a `defineActor` definition. */
export class ActorModuleError extends GatehouseError {
  readonly code = 'GH_ERR_ACTOR_MODULE';
  constructor(name: string, module: string, message: string, options?: ErrorOptions) {
    super(`actor ${name} (${module}): ${message}`, options);
    this.name = 'ActorModuleError';
  }
}

/** An actor did not stop within its shutdown time and was killed. */
export class ShutdownTimeoutError extends GatehouseError {
  readonly code = 'GH_ERR_SHUTDOWN_TIMEOUT';
  constructor(id: string, ms: number) {
    super(`actor ${id} did not stop within ${ms} ms and was killed`);
    this.name = 'ShutdownTimeoutError';
  }
}

/** An actor was asked to crash through the debug-only fault injection hooks. */
export class InjectedFaultError extends GatehouseError {
  readonly code = 'GH_ERR_INJECTED_FAULT';
  constructor(target: string) {
    super(`fault injected into ${target}`);
    this.name = 'InjectedFaultError';
  }
}

/** An error's message followed by its causes' (`listener web could not listen ...: listen EADDRINUSE ...`). */
export function errorChain(err: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = err; e instanceof Error && parts.length < 6; e = e.cause) parts.push(e.message);
  return parts.join(': ') || String(err);
}
