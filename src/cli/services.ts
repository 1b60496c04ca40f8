/** One instance as `GET /v1/services` lists it. */
interface ServiceRow {
  id: string;
  name: string;
  address: string;
  tags: string[];
  ttl: number;
  expiresAt: string | null;
}

/** `5s`, `2m`, `1h`, or `-` when the instance never expires. */
function human(ms: number): string {
  if (ms <= 0) return '-';
  if (ms < 60_000) return `${Math.round(ms / 1_000)}s`;
  if (ms < 3_600_000) return `${Math.round(ms / 60_000)}m`;
  return `${Math.round(ms / 3_600_000)}h`;
}

/**
 * Renders instances as `gatehouse services` prints them: a table with the time left before each
 * expires (`now` is the reference time, for tests).
 *
 * @example
 * renderServices([{ id: 'a-1', name: 'a', address: '127.0.0.1:9001', tags: [], ttl: 10_000, expiresAt }], Date.now());
 */
export function renderServices(rows: readonly ServiceRow[], now: number): string {
  if (rows.length === 0) return 'no service instances registered\n';
  const table = [['NAME', 'ID', 'ADDRESS', 'TAGS', 'TTL', 'EXPIRES IN']];
  const sorted = [...rows].sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
  for (const r of sorted) {
    const left = r.expiresAt === null ? '-' : human(Math.max(1, Date.parse(r.expiresAt) - now));
    table.push([r.name, r.id, r.address, r.tags.join(',') || '-', human(r.ttl), left]);
  }
  const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  return table.map((row) => row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n') + '\n';
}

/**
 * `gatehouse services`: lists the service registry of a running daemon (`--name` for one
 * service, `--json` for the raw answer).
 *
 * @example
 * await printServices('http://127.0.0.1:9901', undefined, { name: 'app' });
 */
export async function printServices(admin: string, token: string | undefined, opts: { name?: string; json?: boolean }): Promise<number> {
  const q = opts.name !== undefined ? `?${new URLSearchParams({ name: opts.name })}` : '';
  try {
    const res = await fetch(`${admin}/v1/services${q}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
    const text = await res.text();
    if (!res.ok) {
      process.stderr.write(`gatehouse services: ${admin} answered ${res.status}: ${text}\n`);
      return 1;
    }
    if (opts.json) process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
    else process.stdout.write(renderServices((JSON.parse(text) as { services: ServiceRow[] }).services, Date.now()));
    return 0;
  } catch (err) {
    process.stderr.write(`gatehouse services: cannot reach ${admin}: ${(err as Error).message}\n`);
    return 1;
  }
}
