/**
 * The zod schema of the whole config file. Parsing with it applies the defaults and normalizes
 * units; cross-field rules (references, duplicates, exclusive keys) live in `checks.ts`, and
 * `load.ts` ties both to YAML line and column numbers.
 */
import os from 'node:os';
import { z } from 'zod';
import { describeValue, duration, int, listenAddress, name, positiveDuration } from './schema-common.ts';
import { listenerSchema } from './schema-listeners.ts';
import { RedisUrlError, parseRedisUrl } from './redis-url.ts';
import { upstreamSchema } from './schema-upstreams.ts';
import type { GatehouseConfig } from './types.ts';

export type * from './types.ts';

const admin = z.strictObject({
  listen: listenAddress().default({ host: '127.0.0.1', port: 9901, address: '127.0.0.1:9901' }),
  token: z.string().min(1).optional(),
});

const runtime = z.strictObject({
  // The shared state table has a row per shard for 64 shards (src/workers/state-table.ts).
  workers: int(0).max(64).default(() => Math.min(64, os.availableParallelism())),
  debug: z.boolean().default(false),
  shutdownTimeout: positiveDuration().default(30_000),
  connectionActor: z.enum(['light', 'xstate']).default('light'),
  // A shard thread with no heartbeat for this long is hung: killed and restarted (0: off).
  watchdog: duration().default(5_000),
  // Reload when the config file changes (debounced; the same path as SIGHUP).
  watchConfig: z.boolean().default(false),
});

const log = z.strictObject({
  level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

// One Redis server (redis://, rediss://) or a master through Redis Sentinel (redis+sentinel://): ./redis-url.ts.
const redisUrl = () =>
  z.string().superRefine((v, ctx) => {
    try {
      parseRedisUrl(v);
    } catch (err) {
      if (!(err instanceof RedisUrlError)) throw err;
      ctx.addIssue({ code: 'custom', input: v, message: err.message });
    }
  });

const cluster = z.strictObject({
  redis: redisUrl(),
  instanceId: name().default(() => os.hostname().replace(/[^A-Za-z0-9_.-]/g, '-').slice(0, 64)),
  keyPrefix: z.string().min(1).max(64).default('gatehouse:'),
  // Instances heartbeat this often; one silent for deadAfter is dead (its users go offline).
  heartbeat: positiveDuration().default(5_000),
  deadAfter: positiveDuration().default(15_000),
});

const actor = z
  .strictObject({
    name: name(),
    module: z.string().min(1),
    restart: z.enum(['permanent', 'transient', 'temporary']).default('permanent'),
    // Each custom actor's own restart intensity: past it, that actor alone is failed.
    maxRestarts: int(0).default(3),
    period: positiveDuration().default(5_000),
    options: z.preprocess((v) => v ?? {}, z.record(z.string(), z.unknown())),
  })
  // `module` is resolved against the config file's directory by `parseConfig`.
  .transform((a) => ({ ...a, moduleSpecifier: a.module }));

// A header name (RFC 9110 token) for the OTLP exporter's requests.
const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;

const otlp = z.strictObject({
  endpoint: z
    .string({ error: (iss) => (iss.input === undefined ? 'required: the OTLP/HTTP traces URL, like http://127.0.0.1:4318/v1/traces' : undefined) })
    .refine((s) => URL.canParse(s) && ['http:', 'https:'].includes(new URL(s).protocol), {
      error: (iss) => `expected an http:// or https:// URL, got ${describeValue(iss.input)}`,
    }),
  headers: z
    .record(z.string(), z.string())
    .superRefine((h, ctx) => {
      for (const k of Object.keys(h)) if (!HEADER_NAME.test(k)) ctx.addIssue({ code: 'custom', path: [k], input: k, message: `expected a header name, got ${describeValue(k)}` });
    })
    .default({}),
  serviceName: z.string().min(1).default('gatehouse'),
  sampleRatio: z.number().min(0).max(1).default(1),
});

// Tracing of HTTP requests (src/telemetry): off unless `otlp` is set.
const telemetry = z.strictObject({ otlp: otlp.optional() });

// An empty section (`upstreams:` with nothing under it) reads as null in YAML: treat it as absent.
const section = <T extends z.ZodType>(schema: T) => z.preprocess((v) => v ?? undefined, schema);

/**
 * The schema of a Gatehouse config file, after YAML parsing. Every top-level key is optional and
 * unknown keys are errors at every level.
 *
 * @example
 * const cfg = gatehouseSchema.parse({ log: { level: 'debug' } });
 * cfg.admin.listen; // { host: '127.0.0.1', port: 9901, address: '127.0.0.1:9901' }
 */
export const gatehouseSchema = z.strictObject({
  admin: section(admin.prefault({})),
  runtime: section(runtime.prefault({})),
  log: section(log.prefault({})),
  cluster: section(cluster.optional()),
  upstreams: section(z.array(upstreamSchema).default([])),
  listeners: section(z.array(listenerSchema).default([])),
  actors: section(z.array(actor).default([])),
  telemetry: section(telemetry.optional()),
});

// The schema's output must be the documented type: this line fails to compile when they drift.
export const configSchema: z.ZodType<GatehouseConfig, unknown> = gatehouseSchema;
