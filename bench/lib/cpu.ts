/**
 * CPU accounting from /proc (Linux): the CPU time a row's process used during a measurement
 * (all its threads), and the "foreign" CPU used meanwhile by processes that are not ours (the
 * machine may be shared with other jobs).
 * Ticks are USER_HZ = 100 per second on Linux.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

const HZ = 100;

interface Stat {
  ppid: number;
  /** utime + stime of the process (all threads). */
  self: number;
  /** stime alone (kernel time: syscalls, socket copies). */
  sys: number;
  /** self + cutime + cstime (reaped children included). */
  total: number;
}

function readStat(pid: number | string): Stat | undefined {
  let s: string;
  try {
    s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name may contain spaces and parentheses: fields start after the last ')'.
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  const self = Number(f[11]) + Number(f[12]);
  return { ppid: Number(f[1]), self, sys: Number(f[12]), total: self + Number(f[13]) + Number(f[14]) };
}

/** CPU seconds a process has used so far (all threads; 10 ms resolution). NaN if it is gone. */
export function processCpuSeconds(pid: number): number {
  const st = readStat(pid);
  return st ? st.self / HZ : Number.NaN;
}

/** Resident set size in KiB of one process (all its threads share it). NaN if it is gone. */
export function rssKiB(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** `pid` and its live descendants (nginx: master + workers; Gatehouse and Node rows: one process). */
export function processTree(pid: number): number[] {
  const byParent = new Map<number, number[]>();
  let names: string[];
  try {
    names = readdirSync('/proc');
  } catch {
    return [pid];
  }
  for (const d of names) {
    if (d.charCodeAt(0) < 48 || d.charCodeAt(0) > 57) continue;
    const st = readStat(d);
    if (!st) continue;
    const kids = byParent.get(st.ppid);
    if (kids) kids.push(Number(d));
    else byParent.set(st.ppid, [Number(d)]);
  }
  const out: number[] = [];
  const todo = [pid];
  for (let i = 0; i < 10_000 && todo.length > 0; i++) {
    const p = todo.pop()!;
    out.push(p);
    todo.push(...(byParent.get(p) ?? []));
  }
  return out;
}

/** CPU seconds used so far by a process and its live descendants (all threads). NaN if it is gone. */
export function treeCpuSeconds(pid: number): number {
  if (!readStat(pid)) return Number.NaN;
  let t = 0;
  for (const p of processTree(pid)) t += readStat(p)?.self ?? 0;
  return t / HZ;
}

/** Kernel (system) CPU seconds used so far by a process and its live descendants. NaN if it is gone. */
export function treeSysCpuSeconds(pid: number): number {
  if (!readStat(pid)) return Number.NaN;
  let t = 0;
  for (const p of processTree(pid)) t += readStat(p)?.sys ?? 0;
  return t / HZ;
}

/**
 * RSS in KiB of a process plus its live descendants (nginx's master
 * and workers are summed). Pages shared between them count once per process; growth is what we use.
 */
export function treeRssKiB(pid: number): number {
  const own = rssKiB(pid);
  if (!Number.isFinite(own)) return Number.NaN;
  let t = own;
  for (const p of processTree(pid).slice(1)) t += rssKiB(p) || 0;
  return t;
}

/** Open file descriptors of a process plus its live descendants (sockets included). */
export function treeFds(pid: number): number {
  let n = 0;
  for (const p of processTree(pid)) {
    try {
      n += readdirSync(`/proc/${p}/fd`).length;
    } catch {
      // gone, or not ours to read
    }
  }
  return n;
}

/** The open-files limits (soft, hard) of a process, from /proc/<pid>/limits. */
export function nofileLimits(pid: number | 'self' = 'self'): { soft: number; hard: number } {
  try {
    const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'));
    const num = (v: string | undefined): number => (v === 'unlimited' ? Number.POSITIVE_INFINITY : Number(v));
    return { soft: num(m?.[1]), hard: num(m?.[2]) };
  } catch {
    return { soft: Number.NaN, hard: Number.NaN };
  }
}

function allStats(): Map<number, Stat> {
  const out = new Map<number, Stat>();
  let names: string[];
  try {
    names = readdirSync('/proc');
  } catch {
    return out;
  }
  for (const d of names) {
    if (d.charCodeAt(0) < 48 || d.charCodeAt(0) > 57) continue;
    const st = readStat(d);
    if (st) out.set(Number(d), st);
  }
  return out;
}

/**
 * CPU ticks that are ours: the driver (with its reaped children, e.g. finished load generators),
 * its live descendants (rows, backends) and kernel threads (softirq work for our traffic).
 */
function ourTicks(root: number): number {
  const ps = allStats();
  const mine = (pid: number): boolean => {
    let p = pid;
    for (let i = 0; i < 64 && p > 2; i++) {
      if (p === root) return true;
      p = ps.get(p)?.ppid ?? 0;
    }
    return p === 2 || p === root;
  };
  let t = 0;
  for (const [pid, st] of ps) {
    if (pid === root) t += st.total;
    else if (pid === 2 || mine(pid)) t += st.self;
  }
  return t;
}

/** user + nice + system ticks of the whole machine (irq, softirq and steal left out), and steal. */
function machineTicks(): { busy: number; steal: number } {
  const v = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  return { busy: v[0]! + v[1]! + v[2]!, steal: v[7] ?? 0 };
}

/**
 * Measures foreign CPU between `start()` and `stop()` in % of one core: machine CPU time minus
 * ours. Unlike summing foreign processes, this also sees short-lived foreign processes and is not
 * fooled by a foreign parent reaping a long-running child (its cutime jumps at once).
 */
export class ForeignCpu {
  readonly #root: number;
  #t0 = 0;
  #machine0 = { busy: 0, steal: 0 };
  #ours0 = 0;
  /** Steal time (the hypervisor ran someone else on our vCPUs) during the last start/stop, % of one core. */
  stealPct = 0;

  constructor(root = process.pid) {
    this.#root = root;
  }

  start(): void {
    this.#ours0 = ourTicks(this.#root);
    this.#machine0 = machineTicks();
    this.#t0 = performance.now();
  }

  stop(): number {
    const m = machineTicks();
    const ours = ourTicks(this.#root) - this.#ours0;
    const secs = Math.max(0.001, (performance.now() - this.#t0) / 1000);
    this.stealPct = (100 * (m.steal - this.#machine0.steal)) / HZ / secs;
    return Math.max(0, (100 * (m.busy - this.#machine0.busy - ours)) / HZ / secs);
  }
}

function cpuTimes(): { total: number; idle: number } {
  const v = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  return { total: v.reduce((a, b) => a + b, 0), idle: v[3]! + v[4]! };
}

/** Whole-machine busy % (100 = all CPUs) over `ms`. */
export async function machineBusy(ms = 500): Promise<number> {
  const a = cpuTimes();
  await sleep(ms);
  const b = cpuTimes();
  return 100 * (1 - (b.idle - a.idle) / Math.max(1, b.total - a.total));
}

/** Waits (at most `maxWaitMs`) until the machine is below `threshold`% busy; returns the last busy %. */
export async function waitQuiet(maxWaitMs: number, threshold = 15): Promise<number> {
  const end = Date.now() + maxWaitMs;
  let b = await machineBusy();
  for (let i = 0; i < 1_000 && b > threshold && Date.now() < end; i++) b = await machineBusy();
  return b;
}
