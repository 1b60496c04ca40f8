/**
 * `npm run bench`: the TCP suites (bench/run.ts: tcp, churn, idle), the HTTP suite (bench/http.ts)
 * and the hub suite (bench/hub.ts), one after the other, each with its own peers in the same run.
 *
 *   npm run bench                          every suite, defaults
 *   npm run bench -- --suite hub           only the hub suite (then hub.ts takes no other options)
 *   npm run bench -- --suite http ...      only the HTTP suite, with bench/http.ts's options
 *   npm run bench -- --suite tls ...       only the TLS suite (bench/http.ts --tls; not part of `all`)
 *   npm run bench -- --suite reload ...    only the reload suite, with bench/reload.ts's options (not part of `all`)
 *   npm run bench -- --suite cluster-rl ... only the cluster rate-limit suite, with bench/cluster-ratelimit.ts's options (not part of `all`)
 *   npm run bench -- --suite cluster-broadcast ... only the cross-instance broadcast suite, with bench/cluster-broadcast.ts's options (not part of `all`)
 *   npm run bench -- --suite tcp,churn ... only those TCP suites, with bench/run.ts's options
 *   npm run bench:hub -- [hub options]     the hub suite with its own options (see bench/hub.ts)
 *
 * With the HTTP, TLS or reload suite and another suite together, each gets only --reps and --dur
 * (their rows and idle options differ from the TCP suites').
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const at = args.findIndex((a) => a === '--suite' || a.startsWith('--suite='));
const suiteArg = at < 0 ? 'all' : args[at]!.includes('=') ? args[at]!.split('=')[1]! : (args[at + 1] ?? '');
const suites = suiteArg === 'all' ? ['tcp', 'churn', 'idle', 'http', 'hub'] : suiteArg.split(',').map((s) => s.trim());
const tcp = suites.filter((s) => s !== 'hub' && s !== 'http' && s !== 'tls' && s !== 'reload' && s !== 'cluster-rl' && s !== 'cluster-broadcast');
const run = (script: string, argv: string[]): number => spawnSync(process.execPath, [path.join(HERE, script), ...argv], { stdio: 'inherit' }).status ?? 1;
const rest = at < 0 ? args : [...args.slice(0, at), ...args.slice(at + (args[at]!.includes('=') ? 1 : 2))];

/** The options of `rest` named in `keep` (as `--name value` or `--name=value`). */
function only(keep: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < rest.length; i++) {
    const name = rest[i]!.split('=')[0]!;
    if (!keep.includes(name)) continue;
    out.push(rest[i]!);
    if (!rest[i]!.includes('=') && i + 1 < rest.length) out.push(rest[++i]!);
  }
  return out;
}

let code = 0;
if (tcp.length > 0) code = run('run.ts', ['--suite', tcp.join(','), ...rest]);
const alone = (s: string): boolean => suites.filter((x) => x !== 'hub').length === 1 && suites.includes(s);
if (suites.includes('http')) code = run('http.ts', alone('http') ? rest : only(['--reps', '--dur'])) || code;
if (suites.includes('tls')) code = run('http.ts', ['--tls', ...(alone('tls') ? rest : only(['--reps', '--dur']))]) || code;
if (suites.includes('reload')) code = run('reload.ts', alone('reload') ? rest : only(['--reps', '--dur'])) || code;
if (suites.includes('cluster-rl')) code = run('cluster-ratelimit.ts', alone('cluster-rl') ? rest : only(['--reps', '--dur'])) || code;
if (suites.includes('cluster-broadcast')) code = run('cluster-broadcast.ts', alone('cluster-broadcast') ? rest : only(['--reps', '--dur'])) || code;
if (suites.includes('hub')) code = run('hub.ts', []) || code;
process.exit(code);
