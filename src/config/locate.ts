/** Finds the line and column of a key path in a parsed YAML document. */
import { isAlias, isMap, isScalar, isSeq } from 'yaml';
import type { Document, LineCounter, Node } from 'yaml';

/** A 1-based position in the config file. */
export interface Position {
  line: number;
  col: number;
}

/**
 * The position of the value at `path` (or, with `at: 'key'`, of its key). When the path runs
 * into a missing key, the position is that of the nearest map or list that exists: the one the
 * key is missing from.
 *
 * @example
 * const lc = new LineCounter();
 * const doc = parseDocument('log:\n  level: loud\n', { lineCounter: lc });
 * locate(doc, lc, ['log', 'level'], 'value'); // { line: 2, col: 10 }
 */
export function locate(doc: Document, lc: LineCounter, path: (string | number)[], at: 'key' | 'value'): Position {
  let node: Node | null = isNode(doc.contents) ? doc.contents : null;
  let key: Node | null = null;
  let matched = 0;
  for (const seg of path) {
    if (isAlias(node)) node = node.resolve(doc) ?? null;
    let next: Node | null = null;
    key = null;
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(seg));
      if (pair) {
        key = isNode(pair.key) ? pair.key : null;
        next = isNode(pair.value) && !isEmptyScalar(pair.value) ? pair.value : key;
      }
    } else if (isSeq(node) && typeof seg === 'number') {
      const item = node.items[seg];
      next = isNode(item) ? item : null;
    }
    if (!next) break;
    node = next;
    matched++;
  }
  const target = at === 'key' && matched === path.length && key ? key : node;
  return position(lc, target?.range?.[0] ?? 0);
}

/** The 1-based position of a character offset. */
export function position(lc: LineCounter, offset: number): Position {
  const { line, col } = lc.linePos(offset);
  return { line, col };
}

function isNode(v: unknown): v is Node {
  return typeof v === 'object' && v !== null && 'range' in v;
}

// `key:` with nothing after it: an empty scalar whose range is zero-length. Point at the key.
function isEmptyScalar(n: Node): boolean {
  return isScalar(n) && n.value === null && n.range !== undefined && n.range !== null && n.range[0] === n.range[1];
}

/**
 * The key path of the innermost entry at or before `offset`, to name where a YAML syntax error
 * is (`log.level` for a duplicate `level:` under `log:`).
 *
 * @example
 * pathAt(doc, text.indexOf('level')); // ['log', 'level']
 */
export function pathAt(doc: Document, offset: number): (string | number)[] {
  const path: (string | number)[] = [];
  const starts = (n: unknown) => (isNode(n) && n.range ? n.range[0] : Infinity);
  const contains = (n: unknown) => isNode(n) && !!n.range && n.range[0] <= offset && offset <= n.range[2];
  let node: unknown = doc.contents;
  for (;;) {
    if (isMap(node)) {
      const pair = node.items.findLast((p) => starts(p.key) <= offset);
      if (!pair || !isScalar(pair.key)) break;
      path.push(String(pair.key.value));
      node = pair.value;
    } else if (isSeq(node)) {
      const i = node.items.findLastIndex((item) => starts(item) <= offset);
      if (i < 0) break;
      path.push(i);
      node = node.items[i];
    } else break;
    if (!contains(node)) break;
  }
  return path;
}
