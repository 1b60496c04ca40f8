/**
 * `npm run bench`: the TCP suites (bench/run.ts: tcp, churn, idle) and the hub suite
 * (bench/hub.ts), one after the other, each with its own peers in the same run.
 *
 *   npm run bench                          every suite, defaults
 *   npm run bench -- --suite hub           only the hub suite (then hub.ts takes no other options)
 *   npm run bench -- --suite tcp,churn ... only those TCP suites, with bench/run.ts's options
 *   npm run bench:hub -- [hub options]     the hub suite with its own options (see bench/hub.ts)
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const at = args.findIndex((a) => a === '--suite' || a.startsWith('--suite='));
const suiteArg = at < 0 ? 'all' : args[at]!.includes('=') ? args[at]!.split('=')[1]! : (args[at + 1] ?? '');
const suites = suiteArg === 'all' ? ['tcp', 'churn', 'idle', 'hub'] : suiteArg.split(',').map((s) => s.trim());
const tcp = suites.filter((s) => s !== 'hub');
const run = (script: string, argv: string[]): number => spawnSync(process.execPath, [path.join(HERE, script), ...argv], { stdio: 'inherit' }).status ?? 1;

let code = 0;
if (tcp.length > 0) {
  const rest = at < 0 ? args : [...args.slice(0, at), ...args.slice(at + (args[at]!.includes('=') ? 1 : 2))];
  code = run('run.ts', ['--suite', tcp.join(','), ...rest]);
}
if (suites.includes('hub')) code = run('hub.ts', []) || code;
process.exit(code);
