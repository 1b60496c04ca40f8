import type { TreeNode } from '../runtime/actor.ts';

/** Renders the actor tree as `gatehouse tree` prints it: one actor a line, indented, id type state. */
export function renderTree(root: TreeNode): string {
  const lines: string[] = [];
  const walk = (n: TreeNode, prefix: string, last: boolean, top: boolean): void => {
    const branch = top ? '' : last ? '└─ ' : '├─ ';
    const extra = [n.restarts ? `restarts=${n.restarts}` : '', n.status !== 'running' && n.status !== n.state ? `(${n.status})` : ''].filter(Boolean).join(' ');
    lines.push(`${prefix}${branch}${n.id}  ${n.type}  ${n.state}${extra ? `  ${extra}` : ''}`);
    const childPrefix = top ? '' : prefix + (last ? '   ' : '│  ');
    n.children.forEach((c, i) => walk(c, childPrefix, i === n.children.length - 1 && !n.truncated, false));
    if (n.truncated) lines.push(`${childPrefix}└─ … ${n.truncated} more`);
  };
  walk(root, '', true, true);
  return lines.join('\n') + '\n';
}

/**
 * `gatehouse tree`: fetches `/actors` from a running daemon and prints it.
 *
 * @example
 * await printTree('http://127.0.0.1:9901', undefined, '3');
 */
export async function printTree(admin: string, token: string | undefined, depth: string | undefined): Promise<number> {
  if (depth !== undefined && !/^\d+$/.test(depth)) {
    process.stderr.write(`gatehouse tree: --depth must be a whole number\n`);
    return 2;
  }
  const q = new URLSearchParams({ limit: '100' });
  if (depth !== undefined) q.set('depth', depth);
  try {
    const res = await fetch(`${admin}/actors?${q}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
    if (!res.ok) {
      process.stderr.write(`gatehouse tree: ${admin} answered ${res.status}: ${await res.text()}\n`);
      return 1;
    }
    process.stdout.write(renderTree((await res.json()) as TreeNode));
    return 0;
  } catch (err) {
    process.stderr.write(`gatehouse tree: cannot reach ${admin}: ${(err as Error).message}\n`);
    return 1;
  }
}
