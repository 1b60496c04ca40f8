/** Small statistics and markdown helpers for the bench report. */

export function median(xs: readonly number[]): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
}

export function min(xs: readonly number[]): number {
  const v = xs.filter((x) => Number.isFinite(x));
  return v.length ? Math.min(...v) : Number.NaN;
}

export function max(xs: readonly number[]): number {
  const v = xs.filter((x) => Number.isFinite(x));
  return v.length ? Math.max(...v) : Number.NaN;
}

/** Formats with thousands separators and `digits` decimals; "–" for NaN. */
export function fmt(x: number, digits = 0): string {
  if (!Number.isFinite(x)) return '–';
  return x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function ratio(a: number, b: number): number {
  return Number.isFinite(a) && Number.isFinite(b) && b > 0 ? a / b : Number.NaN;
}

/** A markdown table; columns whose header starts with a space are right-aligned. */
export function mdTable(headers: string[], rows: string[][]): string {
  const align = headers.map((h) => (h.startsWith(' ') ? '---:' : '---'));
  const line = (cells: string[]): string => `| ${cells.map((c) => c.trim()).join(' | ')} |`;
  return [line(headers), `|${align.join('|')}|`, ...rows.map(line)].join('\n');
}
