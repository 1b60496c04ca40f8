/**
 * scripts/ensure-chromium.sh, the `pretest` step that makes `npm ci && npm test` pass on a fresh
 * Debian machine: run with a PATH of fakes (`id`, `apt-get`) and CHROMIUM_PATH in a temp dir, so
 * that nothing is installed and the machine's own chromium does not matter.
 */
import { execFile } from 'node:child_process';
import { chmodSync, existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { ROOT, tempDir } from '../helpers/daemon.ts';

const SCRIPT = path.join(ROOT, 'scripts/ensure-chromium.sh');
const ONE_LINE = 'chromium is missing: run "apt-get install -y chromium" as root\n';

type Dir = ReturnType<typeof tempDir>;

function fake(dir: Dir, name: string, body: string): void {
  chmodSync(dir.write(name, `#!/bin/sh\n${body}\n`), 0o755);
}

/** A fake apt-get that logs its arguments and, on `install`, creates chromium (or fails with `fail`). */
function fakeAptGet(dir: Dir, mode: 'installs' | 'fails'): void {
  const install = mode === 'installs' ? `printf '#!/bin/sh\\n' > "$CHROMIUM_PATH"; /bin/chmod 755 "$CHROMIUM_PATH"` : 'exit 100';
  fake(dir, 'apt-get', `echo "$@" >> "${dir.dir}/apt.log"\ncase "$1" in install) ${install};; esac`);
}

function run(dir: Dir): Promise<{ code: number; stderr: string; aptCalls: string[]; chromium: boolean }> {
  const chromium = path.join(dir.dir, 'chromium');
  return new Promise((resolve) => {
    // Only the fakes on PATH: the machine's own apt-get must never run here.
    execFile('/bin/sh', [SCRIPT], { env: { PATH: dir.dir, CHROMIUM_PATH: chromium } }, (err, _stdout, stderr) => {
      const log = path.join(dir.dir, 'apt.log');
      resolve({
        code: err ? Number(err.code) : 0,
        stderr,
        aptCalls: existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n') : [],
        chromium: existsSync(chromium),
      });
    });
  });
}

describe('scripts/ensure-chromium.sh (npm pretest)', () => {
  test('does nothing when chromium is there', async () => {
    using dir = tempDir();
    fake(dir, 'chromium', 'exit 0');
    fake(dir, 'id', 'echo 0');
    fakeAptGet(dir, 'installs');
    expect(await run(dir)).toEqual({ code: 0, stderr: '', aptCalls: [], chromium: true });
  });

  test('as root with apt-get, installs it quietly and passes', async () => {
    using dir = tempDir();
    fake(dir, 'id', 'echo 0');
    fakeAptGet(dir, 'installs');
    const r = await run(dir);
    expect(r).toEqual({ code: 0, stderr: 'chromium is missing: installing it with apt-get\n', aptCalls: ['update -qq', 'install -y -qq chromium'], chromium: true });
  });

  test('not root: fails with the one line that says what to run, and installs nothing', async () => {
    using dir = tempDir();
    fake(dir, 'id', 'echo 1000');
    fakeAptGet(dir, 'installs');
    expect(await run(dir)).toEqual({ code: 1, stderr: ONE_LINE, aptCalls: [], chromium: false });
  });

  test('root without apt-get (not Debian): fails with the same line', async () => {
    using dir = tempDir();
    fake(dir, 'id', 'echo 0');
    expect(await run(dir)).toEqual({ code: 1, stderr: ONE_LINE, aptCalls: [], chromium: false });
  });

  test('apt-get fails: says so and what to run, and fails', async () => {
    using dir = tempDir();
    fake(dir, 'id', 'echo 0');
    fakeAptGet(dir, 'fails');
    const r = await run(dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('chromium is missing: installing it with apt-get\nchromium is missing and apt-get could not install it: run "apt-get install -y chromium" as root\n');
    expect(r.aptCalls).toEqual(['update -qq', 'install -y -qq chromium']);
  });
});
