/**
 * Memory probe, preloaded into every thread of a Node row (`NODE_OPTIONS=--import=.../mem-probe.ts`,
 * as bench/tools/idle-mem.ts does): no change to the proxy's code. It polls MEM_PROBE_DIR for
 * command files `cmd-<seq>.json` ({ label, gc?, snapshot? }) and answers each once per thread with
 * `<label>-t<threadId>.json`: process.memoryUsage() (rss is the process's, the rest this isolate's),
 * V8 heap and heap-space statistics and the thread's active libuv resources; `gc` runs a full GC
 * of this isolate first (needs --expose-gc), `snapshot` writes `<label>-t<threadId>.heapsnapshot`.
 * Without MEM_PROBE_DIR it does nothing.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';
import { isMainThread, threadId } from 'node:worker_threads';

const dir = process.env.MEM_PROBE_DIR;
if (dir && existsSync(dir)) {
  const done = new Set<string>();
  const gc = (globalThis as { gc?: () => void }).gc;
  const poll = (): void => {
    let names: string[];
    try {
      names = readdirSync(dir).filter((n) => /^cmd-\d+\.json$/.test(n) && !done.has(n));
    } catch {
      return;
    }
    for (const n of names.sort()) {
      done.add(n);
      let cmd: { label: string; gc?: boolean; snapshot?: boolean };
      try {
        cmd = JSON.parse(readFileSync(path.join(dir, n), 'utf8')) as typeof cmd;
      } catch {
        continue;
      }
      const before = process.memoryUsage();
      if (cmd.gc && gc) {
        gc();
        gc();
      }
      const mu = process.memoryUsage();
      const resources: Record<string, number> = {};
      for (const r of process.getActiveResourcesInfo()) resources[r] = (resources[r] ?? 0) + 1;
      const out = {
        label: cmd.label,
        threadId,
        main: isMainThread,
        gcRan: Boolean(cmd.gc && gc),
        before,
        mu,
        heap: v8.getHeapStatistics(),
        spaces: Object.fromEntries(v8.getHeapSpaceStatistics().map((s) => [s.space_name, { size: s.space_size, used: s.space_used_size }])),
        resources,
      };
      if (cmd.snapshot) v8.writeHeapSnapshot(path.join(dir, `${cmd.label}-t${threadId}.heapsnapshot`));
      writeFileSync(path.join(dir, `${cmd.label}-t${threadId}.json`), JSON.stringify(out));
    }
  };
  setInterval(poll, 100).unref();
}
