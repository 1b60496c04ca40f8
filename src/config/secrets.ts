/**
 * Secret references in config values: `${env:NAME}` and `${file:PATH}`, substituted into the
 * strings of the parsed YAML before the schema sees them. Each config string may hold several,
 * embedded in other text (`redis://:${env:REDIS_PASSWORD}@redis:6379`); `$${` is a literal `${`.
 * The key paths that received a secret are remembered so `redactConfig` can hide their values
 * and error messages do not repeat them.
 */
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import type { PathIssue } from './messages.ts';

/** A key path into the config, as `locate` takes it: `['listeners', 0, 'routes', 1, 'auth']`. */
export type KeyPath = (string | number)[];

/** A `${file:...}` larger than this is refused: a secret is small, a wrong path may not be. */
export const MAX_SECRET_FILE_BYTES = 1024 * 1024;

/**
 * Where the key paths of substituted values are kept on a parsed config. The property is an
 * enumerable symbol: JSON, `Object.keys` and `diffConfig` never see it, and `{ ...config }` (as a
 * reload does to keep what needs a restart) carries it over.
 */
export const SECRET_PATHS: unique symbol = Symbol.for('gatehouse.config.secretPaths');

export interface SecretOptions {
  /** What a relative `${file:PATH}` is resolved against: the config file's directory. */
  baseDir: string;
  /** Where `${env:NAME}` is looked up; default `process.env`. */
  env?: Record<string, string | undefined> | undefined;
}

/** What {@link resolveSecrets} found. */
export interface ResolvedSecrets {
  /** The parsed YAML with every reference replaced (copied where it changed; the input is untouched). */
  value: unknown;
  /** The strings that held at least one reference, with what they became. */
  secrets: { path: KeyPath; value: string }[];
  /** One per bad reference (unset variable, unreadable file, unknown scheme...), at the string's path. */
  issues: PathIssue[];
}

// `$${` (an escaped `${`), or a reference up to its `}` (group 2 is empty when there is none).
const REFERENCE = /\$\$\{|\$\{([^}]*)(\}?)/g;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const FORMS = 'use ${env:NAME} or ${file:PATH}, or write $${ for a literal ${';

/**
 * Substitutes `${env:NAME}` and `${file:PATH}` in every string value (not in keys) of `raw`, the
 * output of YAML's `toJS()`. Numbers and booleans are left alone. Environment variables and files
 * are read now, synchronously: call it again (a reload) to pick up a rotated secret.
 *
 * @example
 * const r = resolveSecrets({ cluster: { redis: 'redis://:${env:PW}@r:6379' } }, { baseDir: '/etc/gatehouse', env: { PW: 'hunter2' } });
 * r.value;   // { cluster: { redis: 'redis://:hunter2@r:6379' } }
 * r.secrets; // [{ path: ['cluster', 'redis'], value: 'redis://:hunter2@r:6379' }]
 */
export function resolveSecrets(raw: unknown, opts: SecretOptions): ResolvedSecrets {
  const env = opts.env ?? process.env;
  const files = new Map<string, { text: string } | { error: string }>();
  const out: ResolvedSecrets = { value: raw, secrets: [], issues: [] };
  const ancestors = new Set<object>();

  const substitute = (s: string, at: KeyPath): string => {
    if (!s.includes('${')) return s;
    let used = false;
    let failed = false;
    const result = s.replace(REFERENCE, (match: string, body: string | undefined, close: string | undefined) => {
      if (body === undefined) return '${';
      const got = close ? resolveOne(body, env, opts.baseDir, files) : { error: `unterminated ${show(match.length > 40 ? `${match.slice(0, 40)}…` : match)}: ${FORMS}` };
      if ('error' in got) {
        out.issues.push({ path: at, message: got.error, at: 'value' });
        failed = true;
        return match;
      }
      used = true;
      return got.text;
    });
    if (used && !failed) out.secrets.push({ path: at, value: result });
    return result;
  };

  const walk = (v: unknown, at: KeyPath): unknown => {
    if (typeof v === 'string') return substitute(v, at);
    if (typeof v !== 'object' || v === null || ancestors.has(v)) return v; // a YAML alias may loop
    ancestors.add(v);
    try {
      if (Array.isArray(v)) {
        const items = v.map((x: unknown, i) => walk(x, [...at, i]));
        return items.some((x, i) => x !== v[i]) ? items : v;
      }
      let copy: Record<string, unknown> | undefined;
      for (const [k, x] of Object.entries(v)) {
        const y = walk(x, [...at, k]);
        if (y === x) continue;
        copy ??= { ...(v as Record<string, unknown>) };
        // defineProperty: a `__proto__` key from YAML stays a plain key.
        Object.defineProperty(copy, k, { value: y, enumerable: true, writable: true, configurable: true });
      }
      return copy ?? v;
    } finally {
      ancestors.delete(v);
    }
  };

  out.value = walk(raw, []);
  return out;
}

function resolveOne(
  body: string,
  env: Record<string, string | undefined>,
  baseDir: string,
  files: Map<string, { text: string } | { error: string }>,
): { text: string } | { error: string } {
  const ref = `\${${body}}`;
  const colon = body.indexOf(':');
  const scheme = colon < 0 ? undefined : body.slice(0, colon);
  const arg = body.slice(colon + 1);
  if (scheme === 'env') {
    if (!ENV_NAME.test(arg)) return { error: `invalid environment variable name ${show(arg)} in ${show(ref)}: use letters, digits and _` };
    const value = env[arg];
    return value === undefined ? { error: `environment variable ${arg} is not set (${show(ref)})` } : { text: value };
  }
  if (scheme === 'file') {
    if (arg === '') return { error: `no file path in ${show(ref)}` };
    const file = path.resolve(baseDir, arg);
    let got = files.get(file);
    if (!got) files.set(file, (got = readSecretFile(file)));
    return got;
  }
  if (scheme === undefined) return { error: `${show(ref)} is not a reference: ${FORMS}` };
  return { error: `unknown reference scheme ${show(scheme)} in ${show(ref)}: ${FORMS}` };
}

/**
 * A secret file's text: UTF-8 (a BOM is dropped), at most {@link MAX_SECRET_FILE_BYTES}, with one
 * trailing newline (`\n` or `\r\n`) removed, as `echo secret > file` leaves one.
 */
function readSecretFile(file: string): { text: string } | { error: string } {
  const fail = (why: string) => ({ error: `cannot read secret file ${file}: ${why}` });
  let bytes: Buffer;
  try {
    const st = statSync(file);
    if (st.isDirectory()) return fail('is a directory');
    // A FIFO or a device would block the parse or never end.
    if (!st.isFile()) return fail('not a regular file');
    if (st.size > MAX_SECRET_FILE_BYTES) return fail(`larger than 1 MiB (${st.size} bytes)`);
    bytes = readFileSync(file);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return fail(e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'permission denied' : e.code === 'EISDIR' ? 'is a directory' : e.message);
  }
  if (bytes.length > MAX_SECRET_FILE_BYTES) return fail(`larger than 1 MiB (${bytes.length} bytes)`); // grew since stat
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return fail('not UTF-8 text');
  }
  return { text: text.replace(/\r?\n$/, '') };
}

/**
 * The problems the schema and the cross-field rules found, reviewed against the substitution:
 * those inside a string whose reference failed are dropped (the failed reference is the problem,
 * reported by {@link resolveSecrets}), and those about a substituted value do not repeat it: quoted
 * text and the value itself become `[redacted]`, with a hint when a typed key got a string.
 *
 * @example
 * reviewProblems([...schemaProblems, ...crossChecks(r.value)], r);
 */
export function reviewProblems(problems: PathIssue[], resolved: ResolvedSecrets): PathIssue[] {
  if (resolved.secrets.length === 0 && resolved.issues.length === 0) return problems;
  const out: PathIssue[] = [];
  for (const p of problems) {
    if (resolved.issues.some((i) => isUnder(p.path, i.path))) continue;
    const secret = resolved.secrets.find((s) => isUnder(p.path, s.path));
    out.push(secret ? { ...p, message: scrub(p.message, secret.value) } : p);
  }
  return out;
}

function scrub(message: string, value: string): string {
  let m = message.replace(/"(?:[^"\\]|\\.)*"/g, '"[redacted]"');
  // Shorter values would match inside ordinary words of the message.
  if (value.length >= 4) m = m.split(value).join('[redacted]');
  if (/^expected (a number|an integer|true or false), got a string/.test(m)) m += ' (a ${...} reference always gives a string: write this key literally)';
  return m;
}

/** Whether `p` is `base` or inside it. */
function isUnder(p: KeyPath, base: KeyPath): boolean {
  return base.length <= p.length && base.every((seg, i) => seg === p[i]);
}

function show(s: string): string {
  return JSON.stringify(s);
}

/**
 * Remembers on a parsed config which key paths got a secret (see {@link SECRET_PATHS}); a config
 * without any is returned unchanged.
 */
export function markSecretPaths<T extends object>(config: T, paths: KeyPath[]): T {
  if (paths.length > 0) Object.defineProperty(config, SECRET_PATHS, { value: paths, enumerable: true, writable: true, configurable: true });
  return config;
}

/**
 * The key paths of a parsed config whose values came from `${env:...}` or `${file:...}` (empty for
 * anything else).
 *
 * @example
 * secretPaths(parseConfig('cluster: { redis: "${env:REDIS_URL}" }', 'x.yaml')); // [['cluster', 'redis']]
 */
export function secretPaths(config: unknown): readonly KeyPath[] {
  if (typeof config !== 'object' || config === null) return [];
  const paths = (config as { [SECRET_PATHS]?: unknown })[SECRET_PATHS];
  return Array.isArray(paths) ? (paths as KeyPath[]) : [];
}
