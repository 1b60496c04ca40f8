import { loadConfigFile } from '../config/load.ts';
import type { GatehouseConfig } from '../config/types.ts';
import { ConfigError, formatConfigIssue } from '../errors.ts';

/**
 * Loads a config for a CLI command; on failure writes every issue to stderr, one
 * `FILE:LINE:COL key.path: message` line each (or the read error), and resolves `undefined`.
 * Every command reports a bad config the same way.
 *
 * @example
 * const cfg = await loadConfigOrReport(file);
 * if (!cfg) return 1;
 */
export async function loadConfigOrReport(file: string): Promise<GatehouseConfig | undefined> {
  try {
    return await loadConfigFile(file);
  } catch (err) {
    if (err instanceof ConfigError) for (const i of err.issues) process.stderr.write(`${formatConfigIssue(i)}\n`);
    else process.stderr.write(`${file}: ${(err as Error).message}\n`);
    return undefined;
  }
}
