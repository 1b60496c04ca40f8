import { parseArgs } from 'node:util';
import { loadConfigOrReport } from './load-config.ts';
import { printTree } from './tree.ts';
import { printTop } from './top.ts';
import { printServices } from './services.ts';
import { processSignals, start, type SignalSource } from './start.ts';
import { mintToken } from './token.ts';

const USAGE = `usage:
  gatehouse start [--config FILE] [--debug]    run the daemon (default config: gatehouse.yaml)
  gatehouse check --config FILE                validate a config; exit 1 listing FILE:LINE:COL key.path: message
  gatehouse tree [--admin URL] [--depth N] [--token T]   print the live actor tree
  gatehouse reload [--admin URL] [--token T]   ask a running daemon to reload its config
  gatehouse top [--admin URL] [--by bytes|events] [--window 5s] [--limit N] [--token T]
                                               the busiest actors over a window (by bytes moved or events)
  gatehouse services [--admin URL] [--token T] [--name NAME] [--json]
                                               list the service registry's instances
  gatehouse token --config FILE --sub USER [--listener NAME] [--ttl 1h]
                                               print a JWT for a hub listener whose auth.jwt has a secret
                                               (for trying the hub by hand: use real tokens in production)
`;

/** Options of {@link main}. */
export interface MainOptions {
  /**
   * Where `start` gets SIGTERM, SIGINT and SIGHUP from (bin/gatehouse.mjs hands over those it
   * queued since its first line). Default: handlers installed when `start` runs.
   */
  signals?: SignalSource;
}

/**
 * The `gatehouse` command line. Returns the process exit code.
 *
 * @example
 * process.exitCode = await main(['check', '--config', 'gatehouse.yaml']);
 */
export async function main(argv: string[], opts: MainOptions = {}): Promise<number> {
  const [cmd, ...rest] = argv;
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: rest,
      options: {
        config: { type: 'string', short: 'c' },
        debug: { type: 'boolean' },
        admin: { type: 'string' },
        depth: { type: 'string' },
        token: { type: 'string' },
        sub: { type: 'string' },
        listener: { type: 'string' },
        ttl: { type: 'string' },
        by: { type: 'string' },
        window: { type: 'string' },
        limit: { type: 'string' },
        name: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }).values;
  } catch (err) {
    process.stderr.write(`gatehouse: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help || !cmd || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    process.stdout.write(USAGE);
    return cmd ? 0 : 2;
  }
  switch (cmd) {
    case 'check':
      return check(values.config as string | undefined);
    case 'start':
      return start((values.config as string | undefined) ?? 'gatehouse.yaml', Boolean(values.debug), opts.signals ?? processSignals);
    case 'tree':
      return printTree(adminUrl(values), token(values), values.depth as string | undefined);
    case 'services':
      return printServices(adminUrl(values), token(values), { name: values.name as string | undefined, json: Boolean(values.json) });
    case 'top':
      return printTop(adminUrl(values), token(values), { by: values.by as string | undefined, window: values.window as string | undefined, limit: values.limit as string | undefined });
    case 'reload':
      return reload(adminUrl(values), token(values));
    case 'token':
      return mintToken(values);
    default:
      process.stderr.write(`gatehouse: unknown command ${cmd}\n${USAGE}`);
      return 2;
  }
}

function adminUrl(v: Record<string, unknown>): string {
  return ((v.admin as string | undefined) ?? process.env.GATEHOUSE_ADMIN ?? 'http://127.0.0.1:9901').replace(/\/$/, '');
}

function token(v: Record<string, unknown>): string | undefined {
  return (v.token as string | undefined) ?? process.env.GATEHOUSE_ADMIN_TOKEN;
}

async function check(file: string | undefined): Promise<number> {
  if (!file) {
    process.stderr.write(`gatehouse check: --config FILE is required\n${USAGE}`);
    return 2;
  }
  const cfg = await loadConfigOrReport(file);
  if (!cfg) return 1;
  process.stdout.write(`${file}: ok (${cfg.listeners.length} listeners, ${cfg.upstreams.length} upstreams, ${cfg.actors.length} actors)\n`);
  return 0;
}

async function reload(admin: string, tok: string | undefined): Promise<number> {
  try {
    const res = await fetch(`${admin}/reload`, { method: 'POST', headers: tok ? { authorization: `Bearer ${tok}` } : {} });
    const body = (await res.json()) as Record<string, unknown>;
    if (res.ok) {
      process.stdout.write(`reloaded: ${JSON.stringify(body)}\n`);
      return 0;
    }
    const errors = (body.errors as string[] | undefined) ?? [JSON.stringify(body)];
    for (const e of errors) process.stderr.write(`${e}\n`);
    return 1;
  } catch (err) {
    process.stderr.write(`gatehouse reload: cannot reach ${admin}: ${(err as Error).message}\n`);
    return 1;
  }
}
