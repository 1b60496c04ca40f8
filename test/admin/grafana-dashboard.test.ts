/**
 * The Grafana dashboard (docs/grafana/gatehouse-dashboard.json) against the real daemon: every
 * metric name in every PromQL expression of the dashboard (panel targets and template variable
 * queries) must be one the daemon exports, and every label a selector filters on must be one its
 * series carry. The daemon runs from its CLI as a child process with an http, a tcp and a hub
 * listener, and takes one HTTP request and one TCP connection first, so that the labelled
 * series exist.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Daemon, ROOT, tempDir, until } from '../helpers/daemon.ts';
import { refusedPort } from '../helpers/ports.ts';

const DASHBOARD = path.join(ROOT, 'docs/grafana/gatehouse-dashboard.json');

interface Target {
  expr?: string;
}
interface Panel {
  type: string;
  title: string;
  targets?: Target[];
  panels?: Panel[];
}
interface Dashboard {
  panels: Panel[];
  templating: { list: { name: string; type: string; query?: string | { query?: string } }[] };
}

/** Every PromQL expression of the dashboard, with where it comes from. */
function expressions(d: Dashboard): { where: string; expr: string }[] {
  const out: { where: string; expr: string }[] = [];
  const walk = (ps: Panel[]): void => {
    for (const p of ps) {
      for (const t of p.targets ?? []) if (t.expr) out.push({ where: `panel "${p.title}"`, expr: t.expr });
      walk(p.panels ?? []);
    }
  };
  walk(d.panels);
  for (const v of d.templating.list) {
    if (v.type !== 'query') continue;
    const q = typeof v.query === 'string' ? v.query : (v.query?.query ?? '');
    // label_values(SELECTOR, LABEL): the selector is PromQL, the label is not a metric.
    const m = /^label_values\((.*),\s*([A-Za-z_]\w*)\)$/.exec(q.trim());
    out.push({ where: `variable $${v.name}`, expr: m ? m[1]! : q });
  }
  return out;
}

const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset', 'inf', 'nan']);

/**
 * The metric names an expression reads, with the label names its selectors use: strings,
 * Grafana variables, range durations and grouping clauses are taken out; what is left that is an
 * identifier and not a function call, a keyword or a number is a metric name.
 */
function metricsIn(expr: string): { name: string; labels: string[] }[] {
  let e = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""').replace(/\$\{[^}]*\}|\$\w+/g, '');
  e = e.replace(/\[[^\]]*\]/g, '');
  e = e.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '');
  const found: { name: string; labels: string[] }[] = [];
  const re = /([A-Za-z_:][\w:]*)\s*(\{[^}]*\})?\s*(\()?/g;
  for (let m = re.exec(e); m !== null; m = re.exec(e)) {
    const [, id, selector, call] = m;
    if (call !== undefined || KEYWORDS.has(id!.toLowerCase())) continue;
    const labels = [...(selector ?? '').matchAll(/([A-Za-z_]\w*)\s*(=~|!~|!=|=)/g)].map((x) => x[1]!);
    found.push({ name: id!, labels });
  }
  return found;
}

/** What /metrics declares (`# TYPE name type`) and the label names seen on each name's samples. */
function exported(text: string): { types: Map<string, string>; labels: Map<string, Set<string>> } {
  const types = new Map<string, string>();
  const labels = new Map<string, Set<string>>();
  for (const line of text.split('\n')) {
    const t = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (t) {
      types.set(t[1]!, t[2]!);
      continue;
    }
    const s = /^([A-Za-z_:][\w:]*)(?:\{([^}]*)\})?\s/.exec(line);
    if (!s) continue;
    const set = labels.get(s[1]!) ?? new Set<string>();
    for (const l of (s[2] ?? '').matchAll(/([A-Za-z_]\w*)="/g)) set.add(l[1]!);
    labels.set(s[1]!, set);
  }
  return { types, labels };
}

/** The declared family of a sample name: itself, or a histogram's or summary's `_bucket`, `_sum`, `_count`. */
function familyOf(name: string, types: Map<string, string>): string | undefined {
  if (types.has(name)) return name;
  const m = /^(.*)_(bucket|sum|count)$/.exec(name);
  if (!m) return undefined;
  const t = types.get(m[1]!);
  if (t === 'histogram' || (t === 'summary' && m[2] !== 'bucket')) return m[1];
  return undefined;
}

/** Labels Prometheus adds at scrape time: filtering on them is right though the daemon never sends them. */
const TARGET_LABELS = new Set(['instance', 'job']);

describe('the Grafana dashboard', () => {
  const dir = tempDir();
  let gh: Daemon;
  let backend: http.Server;
  let text: string;
  const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as Dashboard;

  beforeAll(async () => {
    backend = http.createServer((_req, res) => res.end('ok'));
    backend.listen(0, '127.0.0.1');
    await once(backend, 'listening');
    const port = (backend.address() as net.AddressInfo).port;
    const file = dir.write(
      'gatehouse.yaml',
      `
admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2 }
upstreams:
  - { name: app, healthCheck: { enabled: true, interval: 1s }, backends: ["127.0.0.1:${port}"] }
listeners:
  - { name: web, protocol: http, listen: "127.0.0.1:0", routes: [ { name: api, match: { pathPrefix: / }, upstream: app } ] }
  - { name: tcp-in, protocol: tcp, listen: "127.0.0.1:0", upstream: app }
  - name: hub
    protocol: hub
    listen: "127.0.0.1:0"
    auth: { jwt: { secret: grafana-test-secret-0123456789abcdef-0123456789 } }
    nodes: [ { id: n1, url: "ws://127.0.0.1:${await refusedPort()}/gate" } ]
`,
    );
    gh = await Daemon.start(file);
    const res = await fetch(`http://127.0.0.1:${gh.port('web')}/x`, { headers: { connection: 'close' } });
    expect(await res.text()).toBe('ok');
    const tcp = net.connect(gh.port('tcp-in'), '127.0.0.1');
    tcp.end('GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n');
    tcp.resume();
    await once(tcp, 'close');
    // Scraped once the request and the connection are counted.
    text = (await until(async () => {
      const t = await (await gh.admin('/metrics')).text();
      return /gatehouse_http_requests_total\{[^}]*route="api"/.test(t) && /gatehouse_connections_total\{listener="tcp-in",outcome="ok"\} [1-9]/.test(t) ? t : undefined;
    }, 10_000, 'the request and the tcp connection in /metrics'))!;
  });

  afterAll(async () => {
    await gh?.[Symbol.asyncDispose]();
    backend?.closeAllConnections();
    backend?.close();
    if (backend) await once(backend, 'close');
    dir[Symbol.dispose]();
  });

  test('the expression parser finds metric names and selector labels, not functions or labels of by()', () => {
    expect(metricsIn('histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{instance=~"$instance",code=~"5.."}[$__rate_interval])))')).toEqual([
      { name: 'a_bucket', labels: ['instance', 'code'] },
    ]);
    expect(metricsIn('count(b{x="1"} == 0) or vector(0)').map((m) => m.name)).toEqual(['b']);
    expect(metricsIn('sum by (class) (label_replace(rate(c_total[5m]), "class", "${1}xx", "code", "(.).."))').map((m) => m.name)).toEqual(['c_total']);
    expect(metricsIn('min by (l) ((d - time()) / 86400)').map((m) => m.name)).toEqual(['d']);
  });

  test('every panel has a query, and every metric a query reads is exported', () => {
    const { types } = exported(text);
    const exprs = expressions(dashboard);
    const panels = (function all(ps: Panel[]): Panel[] {
      return ps.flatMap((p) => [p, ...all(p.panels ?? [])]);
    })(dashboard.panels).filter((p) => p.type !== 'row');
    for (const p of panels) expect(p.targets?.some((t) => t.expr), `panel "${p.title}" has no query`).toBe(true);

    const missing: string[] = [];
    const used = new Set<string>();
    for (const { where, expr } of exprs) {
      const names = metricsIn(expr);
      expect(names.length, `${where}: no metric in ${expr}`).toBeGreaterThan(0);
      for (const { name } of names) {
        const family = familyOf(name, types);
        if (family === undefined) missing.push(`${where}: ${name}`);
        else used.add(family);
      }
    }
    expect(missing).toEqual([]);
    // What an operator needs first is on it: requests, latency, connections, backends, breakers, restarts.
    for (const m of [
      'gatehouse_http_requests_total', 'gatehouse_http_request_duration_seconds', 'gatehouse_connections_active',
      'gatehouse_backend_healthy', 'gatehouse_breaker_state', 'gatehouse_actor_restarts_total', 'gatehouse_shard_up',
    ]) expect(used).toContain(m);
  });

  test('every label a selector filters on is one the series carry', () => {
    const { types, labels } = exported(text);
    const wrong: string[] = [];
    for (const { where, expr } of expressions(dashboard)) {
      for (const { name, labels: used } of metricsIn(expr)) {
        const seen = labels.get(name);
        // A family with no sample yet (TLS without a TLS listener) cannot tell its labels.
        if (seen === undefined || familyOf(name, types) === undefined) continue;
        for (const l of used) if (!TARGET_LABELS.has(l) && !seen.has(l)) wrong.push(`${where}: ${name}{${l}} (it has ${[...seen].join(', ') || 'no labels'})`);
      }
    }
    expect(wrong).toEqual([]);
  });
});
