/**
 * Reading a config file: YAML, then the schema and the cross-field rules, every problem reported
 * at once as `FILE:LINE:COL key.path: message` with LINE:COL at the offending value.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LineCounter, parseDocument } from 'yaml';
import type { YAMLError } from 'yaml';
import { ConfigError } from '../errors.ts';
import type { ConfigIssue } from '../errors.ts';
import { crossChecks } from './checks.ts';
import { locate, pathAt, position } from './locate.ts';
import { errorMap, zodIssues } from './messages.ts';
import { configSchema } from './schema.ts';
import { resolveTlsFiles, tlsFileProblems } from './schema-tls.ts';
import { markSecretPaths, resolveSecrets, reviewProblems } from './secrets.ts';
import type { GatehouseConfig } from './types.ts';

export { diffConfig } from './diff.ts';
export type { ConfigDiff } from './diff.ts';
export { redactConfig } from './redact.ts';
export type * from './types.ts';

export interface ParseOptions {
  /** Where `actors[].module`, TLS file and `${file:PATH}` paths are resolved from; default: the directory of `file`. */
  baseDir?: string;
  /** Where `${env:NAME}` references are looked up; default: `process.env`. */
  env?: Record<string, string | undefined>;
}

/**
 * Parses and validates config text. `file` is used only in messages (and, without `baseDir`, to
 * resolve relative paths). `${env:NAME}` and `${file:PATH}` in string values are substituted,
 * read now, before validation (see `secrets.ts`). Throws a `ConfigError` listing every problem,
 * sorted by position.
 *
 * @example
 * try { parseConfig(text, 'gatehouse.yaml'); } catch (err) {
 *   if (err instanceof ConfigError) for (const i of err.issues) console.error(formatConfigIssue(i));
 * }
 */
export function parseConfig(text: string, file: string, opts: ParseOptions = {}): GatehouseConfig {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    // Only a duplicate key has a reliable path; other syntax errors are positioned where the
    // parser gave up, which can be past the entry at fault.
    throw new ConfigError(
      doc.errors.map((e) => ({
        file,
        ...position(lc, e.pos[0]),
        path: e.code === 'DUPLICATE_KEY' ? pathAt(doc, e.pos[0]).join('.') : '',
        message: yamlMessage(e),
      })),
    );
  }
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: 1_000 }) ?? {};
  } catch (err) {
    throw new ConfigError([{ file, line: 1, col: 1, path: '', message: (err as Error).message }]);
  }
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError([{ file, ...locate(doc, lc, [], 'value'), path: '', message: 'expected a mapping of config sections' }]);
  }

  const baseDir = opts.baseDir ?? path.dirname(path.resolve(file));
  const secrets = resolveSecrets(raw, { baseDir, env: opts.env });
  raw = secrets.value;

  const result = configSchema.safeParse(raw, { error: errorMap });
  const problems = [
    ...secrets.issues,
    ...reviewProblems([...(result.success ? [] : zodIssues(result.error.issues)), ...crossChecks(raw)], secrets),
  ];
  if (problems.length === 0) {
    // The files named by the config are read once the config itself is valid (paths resolved).
    const files = result.data!;
    resolveTlsFiles(files, baseDir);
    problems.push(...tlsFileProblems(files));
  }
  if (problems.length > 0) {
    const seen = new Set<string>();
    const issues: ConfigIssue[] = [];
    for (const p of problems) {
      const issue = { file, ...locate(doc, lc, p.path, p.at), path: p.path.join('.'), message: p.message };
      const id = `${issue.path}\u0000${issue.message}`;
      if (seen.has(id)) continue;
      seen.add(id);
      issues.push(issue);
    }
    issues.sort((a, b) => a.line - b.line || a.col - b.col);
    throw new ConfigError(issues);
  }

  const cfg = markSecretPaths(result.data!, secrets.secrets.map((s) => s.path));
  for (const a of cfg.actors) a.module = resolveModule(a.moduleSpecifier, baseDir);
  return cfg;
}

/**
 * Reads and parses a config file; a file that cannot be read is a `ConfigError` too.
 *
 * @example
 * const cfg = await loadConfigFile('examples/quickstart.yaml');
 */
export async function loadConfigFile(file: string): Promise<GatehouseConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENOENT' ? 'no such file' : e.code === 'EISDIR' ? 'is a directory' : e.message;
    throw new ConfigError([{ file, line: 1, col: 1, path: '', message: `cannot read config file: ${why}` }]);
  }
  return parseConfig(text, file);
}

/** Relative and absolute paths are files next to the config; anything else is a package name. */
function resolveModule(spec: string, baseDir: string): string {
  if (spec.startsWith('file:')) return fileURLToPath(spec);
  if (spec.startsWith('./') || spec.startsWith('../') || path.isAbsolute(spec)) return path.resolve(baseDir, spec);
  return spec;
}

// yaml's messages end with a position we already print; keep the first line only.
function yamlMessage(e: YAMLError): string {
  if (e.code === 'DUPLICATE_KEY') return 'YAML: duplicate key';
  if (e.code === 'MULTIPLE_DOCS') return 'YAML: a config file holds one document (remove the second ---)';
  return `YAML: ${e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')}`;
}
