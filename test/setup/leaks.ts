import { setImmediate as realSetImmediate, setTimeout as realSetTimeout } from 'node:timers';
import type { Actor } from '../../src/runtime/actor.ts';
import { live } from '../../src/runtime/live.ts';
import { liveResources, type TrackedResource } from '../../src/runtime/resources.ts';
import { activeHandles, humanResourceName } from './resource-names.ts';
import { handleOrigin, originMark, originTrackingEnabled, timerOrigins, usefulFrames } from './origins.ts';

/** What was alive when a test file started. Leaks are what is alive now and was not then. */
export interface LeakBaseline {
  /** `process.getActiveResourcesInfo()` counted by name. */
  readonly resources: ReadonlyMap<string, number>;
  /** The open handle objects (used to describe only the new ones). */
  readonly handles: WeakSet<object>;
  readonly actors: WeakSet<Actor>;
  /** Tracked resources (src/runtime/resources.ts) counted by `kind label`. */
  readonly tracked: ReadonlyMap<string, number>;
  /** With GATEHOUSE_LEAK_ORIGINS=1: resources recorded after this mark are new. */
  readonly originMark: number;
}

/** One leaked thing: a summary line, and detail lines (addresses, creation stack). */
export interface Leak {
  kind: 'actor' | 'resource' | 'tracked';
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

function countBy<T>(items: Iterable<T>, key: (t: T) => string): Map<string, number> {
  const m = new Map<string, number>();
  for (const t of items) m.set(key(t), (m.get(key(t)) ?? 0) + 1);
  return m;
}

const trackedKey = (r: TrackedResource): string => `${r.kind}\u0000${r.label}`;

/**
 * Records what is alive now: actors, the counts of `process.getActiveResourcesInfo()`, open
 * handles and tracked resources.
 *
 * @example
 * const baseline = takeBaseline();
 * const server = await listen();
 * expect(await checkLeaks({ baseline, graceMs: 50 })).toEqual([expect.stringContaining('TCP server')]);
 */
export function takeBaseline(): LeakBaseline {
  const handles = new WeakSet<object>();
  for (const h of activeHandles()) handles.add(h.owner);
  return {
    resources: countBy(process.getActiveResourcesInfo(), (n) => n),
    handles,
    actors: new WeakSet(live.list()),
    tracked: countBy(liveResources(), trackedKey),
    originMark: originMark(),
  };
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
  if (!b) throw new Error('no leak baseline: pass { baseline: takeBaseline() } or run under test/setup/leak-check.ts');
  return b;
}

/** `created at:` and the project frames of `stack`; nothing when there are none. */
function createdAt(stack: string | undefined): string[] {
  const frames = usefulFrames(stack);
  return frames.length === 0 ? [] : ['created at:', ...frames.map((f) => `  ${f}`)];
}

function resourceDetails(name: string, baseline: LeakBaseline): string[] {
  if (name === 'Timeout') return timerOrigins(baseline.originMark, '  ');
  const fresh = activeHandles().filter((h) => h.info.raw === name && !baseline.handles.has(h.owner));
  return fresh.flatMap((h) => {
    const native = (h.owner as { _handle?: unknown })._handle ?? h.owner;
    return [h.info.text, ...handleOrigin(native, '  ')];
  });
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

/**
 * What is alive now and was not at `baseline`, without waiting. Most callers want
 * {@link checkLeaks}, which gives closing resources time to finish.
 *
 * @example
 * expect(findLeaks(takeBaseline())).toEqual([]);
 */
export function findLeaks(baseline: LeakBaseline = defaultBaseline()): Leak[] {
  const leaks: Leak[] = [];
  for (const a of live.list()) if (!baseline.actors.has(a)) leaks.push(actorLeak(a));

  const now = countBy(process.getActiveResourcesInfo(), (n) => n);
  const extra = new Map<string, number>();
  for (const [name, n] of now) {
    const over = n - (baseline.resources.get(name) ?? 0);
    if (over > 0) extra.set(name, over);
  }
  for (const [name, over] of [...extra].sort(([a], [b]) => a.localeCompare(b))) {
    const was = baseline.resources.get(name) ?? 0;
    leaks.push({
      kind: 'resource',
      summary: `${over} × ${humanResourceName(name)} [${name}]: ${was} at start, ${was + over} now`,
      details: resourceDetails(name, baseline),
    });
  }

  const seen = new Map<string, number>();
  for (const r of liveResources()) {
    const key = trackedKey(r);
    const n = (seen.get(key) ?? 0) + 1;
    seen.set(key, n);
    if (n <= (baseline.tracked.get(key) ?? 0)) continue;
    leaks.push({
      kind: 'tracked',
      summary: `${r.kind} "${r.label}" still alive`,
      details: createdAt(r.origin),
    });
  }
  return leaks;
}

/** One leak as text: the summary, then its details indented. */
export function formatLeak(l: Leak): string {
  return [l.summary, ...l.details.map((d) => `  ${d}`)].join('\n');
}

// The timers come from node:timers, imported at load time: fake timers (vi.useFakeTimers) only
// replace the globals, so a test that left them installed cannot stall the check.
function pause(round: number): Promise<void> {
  // A few turns of the event loop let close callbacks run; then poll every few ms.
  // Each timer has fired before the next look, so the checker never counts itself.
  return new Promise((resolve) => {
    if (round < 3) realSetImmediate(resolve);
    else realSetTimeout(resolve, POLL_MS);
  });
}

/**
 * Waits up to `graceMs` (default 2 s) for everything created since `baseline` to be gone,
 * polling every few milliseconds, then returns one message per leak (empty: no leaks).
 * Leaves no timer behind.
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
    const leaks = findLeaks(baseline);
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
 * const baseline = takeBaseline();
 * await runScenario();
 * await expectNoLeaks({ baseline });
 */
export async function expectNoLeaks(opts: CheckLeaksOptions = {}): Promise<void> {
  const leaks = await checkLeaks(opts);
  if (leaks.length > 0) throw new LeakError(leaks, opts.graceMs ?? DEFAULT_GRACE_MS);
}
