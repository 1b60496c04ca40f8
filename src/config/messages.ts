/**
 * Turns zod's issues into the short, user-facing messages of `gatehouse check`, and each one into
 * a path plus whether it points at a key (unknown keys) or at a value (everything else).
 */
import type { z } from 'zod';
import { describeValue } from './schema-common.ts';

/** A problem before it gets a line and column. */
export interface PathIssue {
  path: (string | number)[];
  message: string;
  /** `key`: point at the key itself (unknown keys); `value`: at the value, or its parent map when missing. */
  at: 'key' | 'value';
}

const KNOWN_KEYS = '\u0000known:';

const EXPECTED: Record<string, string> = {
  string: 'a string', number: 'a number', int: 'an integer', boolean: 'true or false',
  object: 'a mapping', record: 'a mapping', array: 'a list',
};

function expected(e: unknown): string {
  return EXPECTED[String(e)] ?? String(e);
}

/**
 * The error map passed to `safeParse`: every message is `what was wrong`, with the received
 * value where it helps. Unknown keys carry the known keys so `zodIssues` can suggest one.
 *
 * @example
 * gatehouseSchema.safeParse(data, { error: errorMap });
 */
export const errorMap: z.core.$ZodErrorMap = (iss) => {
  switch (iss.code) {
    case 'invalid_type': {
      if (iss.input === undefined) return 'required';
      if (iss.expected === 'int' && typeof iss.input === 'number') return `expected an integer, got ${iss.input}`;
      return `expected ${expected(iss.expected)}, got ${describeValue(iss.input)}`;
    }
    case 'invalid_value':
      return `expected ${iss.values.length === 1 ? JSON.stringify(iss.values[0]) : `one of ${iss.values.join(', ')}`}, got ${describeValue(iss.input)}`;
    case 'invalid_union': {
      if (iss.discriminator !== undefined) {
        const opts = (iss.options as unknown[] | undefined ?? []).join(', ');
        const input = iss.input as Record<string, unknown> | undefined;
        const v = input && typeof input === 'object' ? input[iss.discriminator as string] : undefined;
        return v === undefined ? `required: one of ${opts}` : `expected one of ${opts}, got ${describeValue(v)}`;
      }
      const kinds = iss.errors.map((errs) => errs[0]).filter((e) => e?.code === 'invalid_type').map((e) => expected((e as { expected: string }).expected));
      return kinds.length > 0 ? `expected ${[...new Set(kinds)].join(' or ')}, got ${describeValue(iss.input)}` : undefined;
    }
    case 'too_small':
      if (iss.origin === 'array') return `needs at least ${iss.minimum} item${Number(iss.minimum) === 1 ? '' : 's'}`;
      if (iss.origin === 'string') return 'must not be empty';
      return `must be ${iss.inclusive === false ? '>' : '>='} ${iss.minimum}, got ${String(iss.input)}`;
    case 'too_big':
      if (iss.origin === 'array') return `has more than ${iss.maximum} items`;
      return `must be ${iss.inclusive === false ? '<' : '<='} ${iss.maximum}, got ${String(iss.input)}`;
    case 'unrecognized_keys': {
      const shape = (iss.inst as { _zod?: { def?: { shape?: object } } } | undefined)?._zod?.def?.shape;
      return KNOWN_KEYS + Object.keys(shape ?? {}).join(',');
    }
    default:
      return undefined;
  }
};

/**
 * Flattens zod's issues into {@link PathIssue}s: one per unknown key, one per other issue.
 *
 * @example
 * zodIssues(result.error.issues); // [{ path: ['log', 'levle'], message: 'unknown key (did you mean "level"?)', at: 'key' }]
 */
export function zodIssues(issues: z.core.$ZodIssue[]): PathIssue[] {
  const out: PathIssue[] = [];
  for (const iss of issues) {
    const path = iss.path.filter((p): p is string | number => typeof p !== 'symbol');
    if (iss.code === 'unrecognized_keys') {
      const known = iss.message.startsWith(KNOWN_KEYS) ? iss.message.slice(KNOWN_KEYS.length).split(',').filter(Boolean) : [];
      for (const key of iss.keys) out.push({ path: [...path, key], message: unknownKey(key, known), at: 'key' });
    } else {
      out.push({ path, message: iss.message, at: 'value' });
    }
  }
  return out;
}

function unknownKey(key: string, known: string[]): string {
  const near = closest(key, known);
  if (near) return `unknown key (did you mean "${near}"?)`;
  return known.length > 0 ? `unknown key (expected one of ${known.join(', ')})` : 'unknown key';
}

/** The known word nearest to `word`, if it is close enough to be a typo. */
export function closest(word: string, known: string[]): string | undefined {
  let best: string | undefined;
  let bestD = Math.max(1, Math.floor(word.length / 3)) + 1;
  for (const k of known) {
    const d = k.toLowerCase() === word.toLowerCase() ? 0 : distance(word, k);
    if (d < bestD) [best, bestD] = [k, d];
  }
  return best;
}

function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}
