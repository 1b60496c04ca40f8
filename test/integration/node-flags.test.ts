/**
 * `gatehouse start` runs with DAEMON_NODE_FLAGS (src/daemon/node-flags.ts: the main thread's
 * young-generation cap) when it is run as the `gatehouse` executable: the shebang of
 * bin/gatehouse.mjs passes them to node. Read back from the running daemon's command line.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { describe, expect, test } from 'vitest';
import { DAEMON_NODE_FLAGS } from '../../src/daemon/node-flags.ts';
import { CLI, ROOT, tempDir } from '../helpers/daemon.ts';

describe('the daemon\'s Node flags', () => {
  test('npm start runs the daemon with DAEMON_NODE_FLAGS', () => {
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: { start: string } };
    expect(pkg.scripts.start.startsWith(`node ${DAEMON_NODE_FLAGS.join(' ')} bin/gatehouse.mjs start `)).toBe(true);
  });

  test('the shebang names exactly DAEMON_NODE_FLAGS', () => {
    const shebang = readFileSync(CLI, 'utf8').split('\n')[0]!;
    expect(shebang).toBe(`#!/usr/bin/env -S node ${DAEMON_NODE_FLAGS.join(' ')}`);
  });

  test.skipIf(process.platform !== 'linux')('bin/gatehouse.mjs run as an executable starts node with them', async () => {
    using dir = tempDir();
    const file = dir.write('gh.yaml', 'admin: { listen: "127.0.0.1:0" }\nruntime: { workers: 0 }\n');
    // `env` finds node on PATH: this test's node (24) first.
    const env = { ...process.env, GATEHOUSE_LOG_PRETTY: '0', PATH: `${path.dirname(process.execPath)}${path.delimiter}${process.env.PATH ?? ''}` };
    const child = spawn(CLI, ['start', '--config', file], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env });
    const exited = once(child, 'exit');
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    let timer: NodeJS.Timeout | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        createInterface({ input: child.stdout }).on('line', (l) => l.includes('"msg":"gatehouse started"') && resolve());
        child.once('exit', (code) => reject(new Error(`exited with ${code} before starting: ${stderr}`)));
        timer = setTimeout(() => reject(new Error(`not started within 20 s: ${stderr}`)), 20_000);
      });
      const argv = readFileSync(`/proc/${child.pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
      // node FLAGS... /path/bin/gatehouse.mjs start --config FILE
      const script = argv.indexOf(CLI);
      expect(script).toBeGreaterThan(0);
      expect(path.basename(argv[0]!)).toBe('node');
      expect(argv.slice(1, script)).toEqual([...DAEMON_NODE_FLAGS]);
      expect(argv.slice(script + 1)).toEqual(['start', '--config', file]);
    } finally {
      clearTimeout(timer);
      child.kill('SIGTERM');
      const [code] = (await exited) as [number | null];
      expect(code).toBe(0);
    }
  });
});
