/**
 * The path table of one host tier: a radix tree over `pathPrefix` strings. A lookup walks the
 * request path once, comparing edge labels in place (no substrings, no allocation), and keeps
 * the deepest prefix that ends on a segment boundary and has a route for the method.
 */

const SLASH = 0x2f;

/**
 * The routes that share one `pathPrefix` in one host tier, indexed for the method choice.
 *
 * @example
 * const e = tree.entry('/items');
 * e.byMethod[0] ??= getRoute; e.mask |= 1; // method 0 is GET
 */
export interface PrefixEntry<R> {
  /** The first route (config order) without `methods`: it takes any method. */
  any: R | undefined;
  /** By method index: the first route listing that method. */
  byMethod: (R | undefined)[];
  /** Bit i set: some route here lists method i (for the `Allow` of a 405). */
  mask: number;
}

interface Node<R> {
  label: string;
  /** First char code of each child's label, parallel to `kids`: fan-out is small, a scan beats a Map. */
  codes: number[];
  kids: Node<R>[];
  entry: PrefixEntry<R> | undefined;
}

const newNode = <R>(label: string): Node<R> => ({ label, codes: [], kids: [], entry: undefined });

function childAt<R>(node: Node<R>, code: number): number {
  const codes = node.codes;
  for (let k = 0; k < codes.length; k++) if (codes[k] === code) return k;
  return -1;
}

/**
 * No prefix of this tier fits the path (try the next host tier).
 *
 * @example
 * if (tree.lookup(path, end, m) === NO_FIT) tryNextTier();
 */
export const NO_FIT = -1;

/**
 * A radix tree of path prefixes, filled at compile time and read per request.
 *
 * @example
 * const t = new PrefixTree<string>();
 * t.entry('/v1').any = 'v1';
 * t.lookup('/v1/users?x', 11, -1); // 'v1'
 * t.lookup('/v10', 4, -1);         // NO_FIT
 */
export class PrefixTree<R> {
  private readonly root: Node<R> = newNode('');

  /** The entry for `prefix`, created empty on first use. */
  entry(prefix: string, methodCount = 16): PrefixEntry<R> {
    let node = this.root;
    let i = 0;
    while (i < prefix.length) {
      const k = childAt(node, prefix.charCodeAt(i));
      if (k < 0) {
        const leaf = newNode<R>(prefix.slice(i));
        node.codes.push(prefix.charCodeAt(i));
        node.kids.push(leaf);
        node = leaf;
        break;
      }
      const child = node.kids[k]!;
      const label = child.label;
      let l = 1;
      while (l < label.length && i + l < prefix.length && label.charCodeAt(l) === prefix.charCodeAt(i + l)) l++;
      if (l < label.length) {
        // Split the edge: `mid` takes the common part, the old child keeps the rest.
        const mid = newNode<R>(label.slice(0, l));
        child.label = label.slice(l);
        mid.codes.push(child.label.charCodeAt(0));
        mid.kids.push(child);
        node.kids[k] = mid;
        node = mid;
      } else {
        node = child;
      }
      i += l;
    }
    node.entry ??= { any: undefined, byMethod: new Array<R | undefined>(methodCount).fill(undefined), mask: 0 };
    return node.entry;
  }

  /**
   * The route of the longest fitting prefix that takes `method` (an index, -1 for a method no
   * route lists); else the union mask of the fitting prefixes' methods (a 405); else `NO_FIT`.
   * `end` is where the path stops (the `?` of the query, or its length).
   */
  lookup(path: string, end: number, method: number): R | number {
    let node = this.root;
    let i = 0;
    let best: R | undefined;
    let mask = NO_FIT;
    for (;;) {
      const e = node.entry;
      // A prefix fits at a segment boundary: the path ends, a '/' follows, or it ends in '/'.
      if (e !== undefined && (i === end || path.charCodeAt(i) === SLASH || path.charCodeAt(i - 1) === SLASH)) {
        const r = method >= 0 ? (e.byMethod[method] ?? e.any) : e.any;
        if (r !== undefined) best = r;
        mask = mask === NO_FIT ? e.mask : mask | e.mask;
      }
      if (i >= end) break;
      const k = childAt(node, path.charCodeAt(i));
      if (k < 0) break;
      const child = node.kids[k]!;
      const label = child.label;
      if (i + label.length > end || !path.startsWith(label, i)) break;
      i += label.length;
      node = child;
    }
    return best ?? mask;
  }
}
