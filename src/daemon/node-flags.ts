/**
 * The Node.js flags `gatehouse start` runs with, however it is started: the shebang of
 * `bin/gatehouse.mjs` (`#!/usr/bin/env -S node ...`), package.json's `start` script, and the
 * daemons the tests and benches spawn (`node FLAGS bin/gatehouse.mjs start ...`). V8 reads them
 * only when the process starts, so the daemon cannot set them itself.
 * `test/integration/node-flags.test.ts` checks that the shebang carries these.
 *
 * `--max-semi-space-size=4` caps the main thread's young generation at 4 MiB semi-spaces, as the
 * shard threads' is (`maxYoungGenerationSizeMb: 12`, `src/workers/pool.ts`). Left to V8, a burst
 * of allocation in the main thread (reloads back to back: each parses and checks the whole file)
 * grows them to tens of MiB, and V8 keeps those pages resident after the burst: the RSS after
 * 1,000 reloads was 1.065-1.076x the RSS after one, 1.02-1.03x with the cap (docs/benchmarks.md,
 * "Reload").
 *
 * @example
 * spawn(process.execPath, [...DAEMON_NODE_FLAGS, 'bin/gatehouse.mjs', 'start', '--config', file]);
 */
export const DAEMON_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4'];
