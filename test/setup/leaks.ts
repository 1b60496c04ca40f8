import { setImmediate as realSetImmediate, setTimeout as realSetTimeout } from 'node:timers';
import type { Actor } from '../../src/runtime/actor.ts';
import { live } from '../../src/runtime/live.ts';
import { liveResources } from '../../src/runtime/resources.ts';
import { handleMark, liveHandles, type TrackedHandle } from './handles.ts';
import { childrenByStdio, describeHandle, humanResourceName } from './resource-names.ts';
import { originOf, originTrackingEnabled, usefulFrames } from './origins.ts';
import { liveShards, newInsideShards, shardSnapshot, type ShardSnapshot } from './shard-actors.ts';

/**
 * What existed when a window started. A leak is something created after it and still alive:
 * each kind is compared by identity, never by count, so closing one socket cannot hide another.
 */
export interface LeakBaseline {
  /** Handles, timers and requests (handles.ts) created after this mark are new. */
  readonly handleMark: number;
  readonly actors: WeakSet<Actor>;
  /** Ids of the tracked resources (src/runtime/resources.ts) alive then. */
  readonly tracked: ReadonlySet<number>;
  /** The actors inside each running shard's worker thread. */
  readonly shards: ShardSnapshot;
}

/** One leaked thing: a summary line, and detail lines (addresses, creation stack). */
export interface Leak {
  kind: 'actor' | 'resource' | 'tracked' | 'shard';
  summary: string;
  details: string[];
}

export interface CheckLeaksOptions {
  /** Compare with this baseline; by default the one the set-up file recorded when the test file started. */
  baseline?: LeakBaseline;
  /** How long resources that are closing get before they count as leaks. Default 2000 ms. */
  graceMs?: number;
}

const DEFAULT_GRACE_MS = 2_000;
const RESOURCE_LEAK = /^\d+ × /;
const ORIGINS_HINT = '  (To see where each timer, socket, server or child process was created, run again with GATEHOUSE_LEAK_ORIGINS=1.)';
const POLL_MS = 5;
const FILE_BASELINE = Symbol.for('gatehouse.test.leakBaseline');

/**
 * Records what is alive now: actors, handles (by creation order), tracked resources, and the
 * actors inside running shards (asked of their threads, hence async).
 *
 * @example
 * const baseline = await takeBaseline();
 * const server = await listen();
 * expect(await checkLeaks({ baseline, graceMs: 50 })).toEqual([expect.stringContaining('TCP server')]);
 */
export async function takeBaseline(): Promise<LeakBaseline> {
  const local = {
    handleMark: handleMark(),
    actors: new WeakSet(live.list()),
    tracked: new Set(liveResources().map((r) => r.id)),
  };
  return { ...local, shards: await shardSnapshot() };
}

/** Sets the baseline {@link checkLeaks} uses by default (the set-up file calls it when a test file starts). */
export function setFileBaseline(b: LeakBaseline): void {
  (globalThis as Record<symbol, unknown>)[FILE_BASELINE] = b;
}

/** The baseline recorded when this test file started, if the set-up file ran. */
export function fileBaseline(): LeakBaseline | undefined {
  return (globalThis as Record<symbol, unknown>)[FILE_BASELINE] as LeakBaseline | undefined;
}

function defaultBaseline(): LeakBaseline {
  const b = fileBaseline();
  // Comparing with "now" would find nothing and pass silently.
  if (!b) throw new Error('no leak baseline: pass { baseline: await takeBaseline() } or run under test/setup/leak-check.ts');
  return b;
}

/** `created at:` and the project frames of `stack`; nothing when there are none. */
function createdAt(stack: string | undefined): string[] {
  const frames = usefulFrames(stack);
  return frames.length === 0 ? [] : ['created at:', ...frames.map((f) => `  ${f}`)];
}

function actorLeak(a: Actor): Leak {
  let state: string;
  try {
    state = a.state;
  } catch (err) {
    state = `<state getter threw: ${(err as Error).message}>`;
  }
  const details = a.parent ? [`parent: ${a.parent.type} ${a.parent.id}`] : [];
  details.push(...createdAt(a.origin));
  return { kind: 'actor', summary: `actor ${a.type} ${a.id} state=${state} status=${a.status}`, details };
}

/** One leak per resource type: how many, then a line (and origin) per resource. */
function handleLeaks(handles: TrackedHandle[]): Leak[] {
  const children = childrenByStdio(handles);
  const byType = new Map<string, TrackedHandle[]>();
  for (const h of handles) byType.set(h.type, [...(byType.get(h.type) ?? []), h]);
  return [...byType]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([type, hs]) => ({
      kind: 'resource',
      summary: `${hs.length} × ${humanResourceName(type)} [${type}] created after the baseline, still alive`,
      details: hs.flatMap((h) => [describeHandle(h, children), ...originOf(h.asyncId, '  ')]),
    }));
}

/**
 * What this thread holds now that it did not at `baseline`, without waiting and without asking
 * shard threads. Most callers want {@link checkLeaks}, which also asks running shards and gives
 * closing resources time to finish.
 *
 * @example
 * expect(findLeaks(await takeBaseline())).toEqual([]);
 */
export function findLeaks(baseline: LeakBaseline = defaultBaseline()): Leak[] {
  const leaks: Leak[] = [];
  for (const a of live.list()) if (!baseline.actors.has(a)) leaks.push(actorLeak(a));
  leaks.push(...handleLeaks(liveHandles(baseline.handleMark)));
  for (const r of liveResources()) {
    if (baseline.tracked.has(r.id)) continue;
    leaks.push({ kind: 'tracked', summary: `${r.kind} "${r.label}" still alive`, details: createdAt(r.origin) });
  }
  return leaks;
}

/** The actors created inside running shard threads since `baseline`, as leaks. */
async function shardLeaks(baseline: LeakBaseline): Promise<Leak[]> {
  if (liveShards().length === 0) return [];
  // A shard in this thread (workers: 0) answers with actors the live set already reported.
  const local = new Set(live.list().map((a) => `${a.type}\u0000${a.id}`));
  const found = await newInsideShards(baseline.shards);
  return found.flatMap((f): Leak[] => {
    if ('error' in f) return [{ kind: 'shard', summary: `${f.shard} did not say which actors it holds: ${f.error.message}`, details: [] }];
    if (local.has(`${f.type}\u0000${f.id}`)) return [];
    return [{ kind: 'shard', summary: `actor ${f.type} ${f.id} state=${f.state} status=${f.status} inside ${f.shard} (a worker thread)`, details: [] }];
  });
}

/** One leak as text: the summary, then its details indented. */
export function formatLeak(l: Leak): string {
  return [l.summary, ...l.details.map((d) => `  ${d}`)].join('\n');
}

// The timers come from node:timers, imported at load time: fake timers (vi.useFakeTimers) only
// replace the globals, so a test that left them installed cannot stall the check.
function pause(round: number): Promise<void> {
  // A few turns of the event loop let close callbacks run; then poll every few ms. Each of
  // these timers has run before the next look, so the checker never counts itself.
  return new Promise((resolve) => {
    if (round < 3) realSetImmediate(resolve);
    else realSetTimeout(resolve, POLL_MS);
  });
}

/**
 * Waits up to `graceMs` (default 2 s) for everything created since `baseline` to be gone,
 * here and inside running shard threads, polling every few milliseconds, then returns one
 * message per leak (empty: no leaks). Leaves no timer behind.
 *
 * @example
 * onTestFinished(() => server.close());
 * // ...
 * expect(await checkLeaks()).toEqual([]);
 */
export async function checkLeaks(opts: CheckLeaksOptions = {}): Promise<string[]> {
  const baseline = opts.baseline ?? defaultBaseline();
  const deadline = performance.now() + (opts.graceMs ?? DEFAULT_GRACE_MS);
  for (let round = 0; ; round++) {
    const leaks = [...findLeaks(baseline), ...(await shardLeaks(baseline))];
    if (leaks.length === 0 || performance.now() >= deadline) return leaks.map(formatLeak);
    await pause(round);
  }
}

/** The error text for a list of leak messages. */
export function formatLeakReport(leaks: string[], graceMs = DEFAULT_GRACE_MS): string {
  const lines = leaks.map((l) => `  - ${l.replaceAll('\n', '\n    ')}`);
  if (!originTrackingEnabled() && leaks.some((l) => RESOURCE_LEAK.test(l))) lines.push(ORIGINS_HINT);
  return [`Leak check: ${leaks.length} leak(s) still alive after a ${graceMs} ms grace:`, ...lines].join('\n');
}

/** Thrown by {@link expectNoLeaks}; `leaks` holds one message per leak. */
export class LeakError extends Error {
  readonly code = 'GH_ERR_TEST_LEAK';
  readonly leaks: string[];
  constructor(leaks: string[], graceMs: number) {
    super(formatLeakReport(leaks, graceMs));
    this.name = 'LeakError';
    this.leaks = leaks;
  }
}

/**
 * {@link checkLeaks}, throwing a {@link LeakError} that names every leak. The set-up file runs
 * it after each test file; a test may call it to check a narrower window.
 *
 * @example
 * const baseline = await takeBaseline();
 * await runScenario();
 * await expectNoLeaks({ baseline });
 */
export async function expectNoLeaks(opts: CheckLeaksOptions = {}): Promise<void> {
  const leaks = await checkLeaks(opts);
  if (leaks.length > 0) throw new LeakError(leaks, opts.graceMs ?? DEFAULT_GRACE_MS);
}
