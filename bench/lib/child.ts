import { fstatSync } from 'node:fs';

/**
 * For the bench's own child processes (backends, peers, load generators): exit when the driver
 * is gone. The driver holds our stdin pipe open and never writes to it; EOF means it exited,
 * even if it was killed with SIGKILL and could not stop us itself. The parent PID is watched too.
 */
export function exitWithParent(): void {
  const ppid = process.ppid;
  let pipe = false;
  try {
    pipe = fstatSync(0).isFIFO();
  } catch {
    pipe = false;
  }
  // Only a pipe from the driver means anything (run by hand, stdin is a TTY or /dev/null).
  if (pipe) {
    process.stdin.on('end', () => process.exit(0));
    process.stdin.on('error', () => process.exit(0));
    process.stdin.resume();
  }
  setInterval(() => {
    if (process.ppid !== ppid) process.exit(0);
  }, 1_000).unref();
  process.on('SIGTERM', () => process.exit(0));
}

/** One JSON line on stdout: the driver reads results and readiness this way. */
export function report(obj: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

/** A positive integer from argv, or exit 2 with the usage line. */
export function intArg(v: string | undefined, name: string, usage: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) {
    process.stderr.write(`bad ${name} ${JSON.stringify(v)}\nusage: ${usage}\n`);
    process.exit(2);
  }
  return n;
}
