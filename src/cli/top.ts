import type { TopAnswer, TopRow } from '../admin/top.ts';

/** `gatehouse top` options, as given on the command line (validated by the admin API). */
export interface TopOptions {
  by?: string;
  window?: string;
  limit?: string;
}

/** `1536` -> `1.5 KiB`. */
function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

/**
 * Renders a `/actors/top` answer as `gatehouse top` prints it: a header line, then one aligned
 * row per actor, busiest first.
 *
 * @example
 * process.stdout.write(renderTop({ by: 'bytes', windowMs: 5000, limit: 10, rows }));
 */
export function renderTop(a: TopAnswer): string {
  const secs = a.windowMs / 1000;
  const head = `top ${a.rows.length} actors by ${a.by} over ${secs}s`;
  if (a.rows.length === 0) return `${head}\n(no actor ${a.by === 'bytes' ? 'moved bytes' : 'had events'} in the window)\n`;
  const cols: [string, (r: TopRow) => string][] =
    a.by === 'bytes'
      ? [
          ['ID', (r) => r.id],
          ['TYPE', (r) => r.type],
          ['BYTES', (r) => bytes(r.bytes ?? 0)],
          ['RATE', (r) => `${bytes(Math.round((r.bytes ?? 0) / secs))}/s`],
          ['IN', (r) => bytes(r.bytesIn ?? 0)],
          ['OUT', (r) => bytes(r.bytesOut ?? 0)],
          ['PEER', (r) => r.peer ?? ''],
          ['BACKEND', (r) => r.backend ?? ''],
        ]
      : [
          ['ID', (r) => r.id],
          ['TYPE', (r) => r.type],
          ['EVENTS', (r) => String(r.events ?? 0)],
          ['STATE', (r) => r.state ?? ''],
        ];
  const table = [cols.map(([h]) => h), ...a.rows.map((r) => cols.map(([, f]) => f(r)))];
  const widths = cols.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  const lines = table.map((row) => row.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd());
  return `${head}\n${lines.join('\n')}\n`;
}

/**
 * `gatehouse top`: asks `/actors/top` of a running daemon (which answers after the window) and
 * prints the table. Exit 0, 1 when the daemon refuses or cannot be reached (its error is
 * printed), 2 for a bad option the daemon named.
 *
 * @example
 * await printTop('http://127.0.0.1:9901', token, { by: 'bytes', window: '5s', limit: '10' });
 */
export async function printTop(admin: string, token: string | undefined, opts: TopOptions): Promise<number> {
  const q = new URLSearchParams();
  if (opts.by !== undefined) q.set('by', opts.by);
  if (opts.window !== undefined) q.set('window', opts.window);
  if (opts.limit !== undefined) q.set('limit', opts.limit);
  try {
    const res = await fetch(`${admin}/actors/top?${q}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
    if (!res.ok) {
      const text = await res.text();
      let body: { error?: { code?: string; message?: string } } | undefined;
      try {
        body = JSON.parse(text) as typeof body;
      } catch {
        body = undefined;
      }
      if (body?.error?.code === 'bad_query') {
        process.stderr.write(`gatehouse top: ${body.error.message}\n`);
        return 2;
      }
      process.stderr.write(`gatehouse top: ${admin} answered ${res.status}: ${text}\n`);
      return 1;
    }
    process.stdout.write(renderTop((await res.json()) as TopAnswer));
    return 0;
  } catch (err) {
    process.stderr.write(`gatehouse top: cannot reach ${admin}: ${(err as Error).message}\n`);
    return 1;
  }
}
