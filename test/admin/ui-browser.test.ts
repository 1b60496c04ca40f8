/**
 * The debug UI (`GET /`, src/admin/ui.html) in a real browser: Debian's chromium, headless,
 * driven by playwright-core, against a real daemon started from the CLI (a tcp listener and its
 * upstream, a hub listener with one node, debug mode on, an admin token). The assertions are on
 * what a user sees on the page: the actor tree, the upstreams table, the hub panel, the event
 * log and the error line.
 *
 * Needs /usr/bin/chromium (`apt-get install -y chromium`); without it the file fails, it does
 * not skip.
 */
import { existsSync } from 'node:fs';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { SignJWT } from 'jose';
import { WebSocket } from 'ws';
import { Daemon, tempDir } from '../helpers/daemon.ts';
import { HubNode } from '../helpers/hub-node.ts';
import { startKillableEcho, type KillableEcho } from '../helpers/backends.ts';

const CHROMIUM = '/usr/bin/chromium';
const ADMIN_TOKEN = 'ui-browser-admin-token-0123456789';
const ROTATED_TOKEN = 'ui-browser-admin-token-rotated-9876543210';
const JWT_SECRET = 'ui-browser-jwt-secret-of-reasonable-length-0123';
const WAIT_MS = 15_000;

// The page functions below run in the browser; the project's lib has no DOM, so declare the bit they use.
interface PageElement {
  tagName: string;
  textContent: string | null;
  children: ArrayLike<PageElement>;
}
declare const document: { querySelectorAll(selector: string): ArrayLike<PageElement> };

/** A text an element must show: a string is compared whole, a RegExp is matched. */
type Wanted = string | RegExp;

/**
 * Waits until, for each `wanted`, some element matching `selector` shows it. An element's text
 * is its trimmed textContent; a table row's is its cells' joined by ` | `. On the deadline it
 * fails with what the page shows instead.
 */
async function waitForTexts(page: Page, selector: string, wanted: Wanted[], what: string, timeout = WAIT_MS): Promise<void> {
  const want = wanted.map((w) => (typeof w === 'string' ? { exact: w } : { source: w.source, flags: w.flags }));
  try {
    await page.waitForFunction(
      ({ selector, want }) => {
        const texts = Array.from(document.querySelectorAll(selector), (e) =>
          e.tagName === 'TR' ? Array.from(e.children, (c) => (c.textContent ?? '').trim()).join(' | ') : (e.textContent ?? '').trim(),
        );
        return want.every((w) => texts.some((t) => ('exact' in w ? t === w.exact : new RegExp(w.source!, w.flags).test(t))));
      },
      { selector, want },
      { timeout, polling: 50 },
    );
  } catch (err) {
    const shown = await texts(page, selector).catch(() => ['(page gone)']);
    throw new Error(`${what}: wanted ${wanted.map(String).join(', ')} in ${selector} within ${timeout} ms; the page shows ${JSON.stringify(shown)}`, { cause: err });
  }
}

/** What the elements matching `selector` show now (rows as `cell | cell`). */
async function texts(page: Page, selector: string): Promise<string[]> {
  return page.$$eval(selector, (els) =>
    (els as unknown as PageElement[]).map((e) =>
      e.tagName === 'TR' ? Array.from(e.children, (c) => (c.textContent ?? '').trim()).join(' | ') : (e.textContent ?? '').trim(),
    ),
  );
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** A hub client: a real `ws` client with a JWT for `userId`, open once the gateway welcomed it. */
async function hubClient(port: number, userId: string): Promise<{ ws: WebSocket; clientId: string; close(): Promise<void> }> {
  const jwt = await new SignJWT({ sub: userId }).setProtectedHeader({ alg: 'HS256' }).setIssuedAt().setExpirationTime('1h').sign(new TextEncoder().encode(JWT_SECRET));
  const ws = new WebSocket(`ws://127.0.0.1:${port}/connect?token=${jwt}`);
  ws.on('error', () => {});
  const closed = once(ws, 'close');
  closed.catch(() => {});
  const welcome = new Promise<Record<string, unknown>>((resolve, reject) => {
    ws.on('message', (data) => {
      let f: Record<string, unknown> | undefined;
      try {
        f = JSON.parse(data.toString()) as Record<string, unknown>;
      } catch {
        return;
      }
      if (f.type === 'welcome') resolve(f);
    });
    ws.once('close', (code, reason) => reject(new Error(`hub client closed before its welcome: ${code} ${reason.toString()}`)));
  });
  const close = async (): Promise<void> => {
    if (ws.readyState === ws.CLOSED) return;
    ws.close();
    await Promise.race([closed, new Promise((_, rej) => AbortSignal.timeout(5_000).addEventListener('abort', () => rej(new Error('hub client did not close'))))]).catch(() => ws.terminate());
  };
  try {
    const w = await Promise.race([welcome, new Promise<never>((_, rej) => AbortSignal.timeout(WAIT_MS).addEventListener('abort', () => rej(new Error('no welcome'))))]);
    return { ws, clientId: String(w.clientId), close };
  } catch (err) {
    ws.terminate();
    throw err;
  }
}

describe('debug UI in a real browser (chromium, playwright-core)', () => {
  const stack = new AsyncDisposableStack();
  let backend: KillableEcho;
  let node: HubNode;
  let daemon: Daemon;
  let browser: Browser;
  let configText: (adminToken: string) => string;
  let writeConfig: (text: string) => void;

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(`the browser test needs Debian's chromium at ${CHROMIUM}: run \`apt-get install -y chromium\` (.ci/run does it in CI)`);
    }
    backend = stack.use(await startKillableEcho());
    node = stack.use(await HubNode.start());
    const dir = stack.use(tempDir());
    configText = (adminToken) => `admin: { listen: "127.0.0.1:0", token: ${adminToken} }
runtime: { workers: 1, shutdownTimeout: 2s, debug: true }
log: { level: info }
upstreams:
  - name: app
    backends: [ ${backend.address} ]
    healthCheck: { type: tcp, interval: 200ms, timeout: 100ms }
listeners:
  - name: tcp-in
    protocol: tcp
    listen: 127.0.0.1:0
    upstream: app
  - name: hub
    protocol: hub
    listen: 127.0.0.1:0
    path: /connect
    auth: { jwt: { secret: ${JWT_SECRET} } }
    nodes: [ { id: n1, url: "${node.url}" } ]
    presenceGrace: 0ms
`;
    const file = dir.write('gatehouse.yaml', configText(ADMIN_TOKEN));
    writeConfig = (text) => void dir.write('gatehouse.yaml', text);
    daemon = stack.use(await Daemon.start(file));
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    stack.defer(() => browser.close());
  });

  afterAll(async () => {
    await stack.disposeAsync();
  });

  /** A fresh browser context (its own sessionStorage) with the UI open. */
  async function openUi(query = ''): Promise<{ context: BrowserContext; page: Page }> {
    const context = await browser.newContext();
    const page = await context.newPage();
    const r = await page.goto(`${daemon.adminUrl}/${query}`);
    expect(r?.status()).toBe(200);
    return { context, page };
  }

  test('without the token, or with a wrong one, the page answers 401 and shows the JSON error', async () => {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      for (const query of ['', '?token=wrong']) {
        const r = await page.goto(`${daemon.adminUrl}/${query}`);
        expect(r?.status(), query).toBe(401);
        expect(r?.headers()['www-authenticate'], query).toMatch(/^Bearer realm="gatehouse-admin"/);
        expect(JSON.parse(await page.locator('body').innerText()), query).toEqual({ error: { code: 'unauthorized', message: 'a valid bearer token is required' } });
      }
    } finally {
      await context.close();
    }
  });

  test('with ?token= the page shows the actor tree, the upstreams and the hub; the token leaves the address bar', async () => {
    const { context, page } = await openUi(`?token=${ADMIN_TOKEN}`);
    try {
      expect(new URL(page.url()).search).toBe('');
      await waitForTexts(page, '#tree .id', ['root', 'shards', 'shard-0', 'listener:tcp-in', 'listener:hub', 'node:hub/n1'], 'the actor tree');
      await waitForTexts(page, '#tree li.status-running > .id', ['root', 'listener:tcp-in', 'listener:hub'], 'running actors');
      // Leaves of the tree, as a line shows them: toggle, id, type, state.
      await waitForTexts(page, '#tree li', ['·listener:tcp-in listener listening', '·listener:hub listener listening', '·node:hub/n1 node-stream ready'], 'the listeners listening, the node stream ready');

      await waitForTexts(page, '#upstreams div', ['app (round_robin)'], 'the upstream');
      await waitForTexts(page, '#upstreams tr', ['backend | healthy | breaker | active | weight', `${backend.address} | yes | closed | 0 | 1`], 'the backend healthy, breaker closed');
      expect(await page.locator('#upstreams td.yes', { hasText: /^yes$/ }).count()).toBe(1);

      expect(await page.locator('#hub-section').isVisible()).toBe(true);
      await waitForTexts(page, '#hub div', ['listener hub'], 'the hub listener');
      await waitForTexts(page, '#hub tr', ['node | url | stream | ready', `n1 | ${node.url} | ready | yes`], 'n1 ready');
      await waitForTexts(page, '#hub .counter', ['clients 0', 'users online 0', 'users in grace 0', 'pending requests 0', 'pending acks 0'], 'the hub counters');
      expect(await texts(page, '#error')).toEqual(['']);
      expect(await texts(page, '#updated')).toEqual([expect.stringMatching(/^updated /)]);
    } finally {
      await context.close();
    }
  });

  test('a hub client shows in the hub counters and the event log, and is gone after it leaves', async () => {
    const { context, page } = await openUi(`?token=${ADMIN_TOKEN}`);
    try {
      await waitForTexts(page, '#hub .counter', ['clients 0'], 'no client yet');
      const client = await hubClient(daemon.port('hub'), 'alice');
      try {
        await waitForTexts(page, '#hub .counter', ['clients 1', 'users online 1'], 'the client counted');
        await waitForTexts(page, '#tree .id', [`client:${client.clientId}`], 'the client-proxy actor in the tree');
        await waitForTexts(page, '#log div', [new RegExp(`spawned +\\[0\\] client:${escapeRe(client.clientId)} client-proxy`)], 'the spawned event');
      } finally {
        await client.close();
      }
      await waitForTexts(page, '#hub .counter', ['clients 0', 'users online 0'], 'the client gone');
      await waitForTexts(page, '#log div', [new RegExp(`down +\\[0\\] client:${escapeRe(client.clientId)} client-proxy normal`)], 'the down event');
      await waitForTexts(page, '#hub tr', [`n1 | ${node.url} | ready | yes`], 'n1 still ready');
    } finally {
      await context.close();
    }
  });

  test('an older daemon without /hub: the hub section is hidden and no error shows; no hub listeners says so', async () => {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      let hubAnswer: { status: number; body: unknown } = { status: 404, body: { error: { code: 'not_found', message: 'no such route' } } };
      await page.route(/\/hub$/, (route) => route.fulfill({ status: hubAnswer.status, contentType: 'application/json', body: JSON.stringify(hubAnswer.body) }));
      expect((await page.goto(`${daemon.adminUrl}/?token=${ADMIN_TOKEN}`))?.status()).toBe(200);
      await waitForTexts(page, '#tree .id', ['listener:tcp-in'], 'the tree');
      await page.locator('#hub-section').waitFor({ state: 'hidden', timeout: WAIT_MS });
      await waitForTexts(page, '#upstreams tr', [`${backend.address} | yes | closed | 0 | 1`], 'the upstreams still shown');
      expect(await texts(page, '#error')).toEqual(['']);

      hubAnswer = { status: 200, body: { listeners: [] } };
      await page.locator('#hub-section').waitFor({ state: 'visible', timeout: WAIT_MS });
      await waitForTexts(page, '#hub div', ['no hub listeners'], 'no hub listeners');

      // Any other failure of /hub is an error, as for the other routes.
      hubAnswer = { status: 500, body: { error: { code: 'internal', message: 'internal error' } } };
      await waitForTexts(page, '#error', ['/hub: 500 internal: internal error'], 'the /hub error');
    } finally {
      await context.close();
    }
  });

  // Last: it changes the daemon's admin token.
  test('the token rotated by a reload: the open page shows the 401 error; reopened with the new ?token= it works again', async () => {
    const { context, page } = await openUi(`?token=${ADMIN_TOKEN}`);
    try {
      await waitForTexts(page, '#tree .id', ['listener:hub'], 'the tree with the token');
      writeConfig(configText(ROTATED_TOKEN));
      const r = await daemon.admin('/reload', { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      expect(r.status).toBe(200);
      await r.body?.cancel();
      await waitForTexts(page, '#error', [/^\/(actors\?\S*|upstreams|hub|state|info): 401 unauthorized: a valid bearer token is required$|^\/metrics: 401$/], 'the 401 error');
    } finally {
      await context.close();
    }

    const old = await browser.newContext();
    try {
      expect((await (await old.newPage()).goto(`${daemon.adminUrl}/?token=${ADMIN_TOKEN}`))?.status()).toBe(401);
    } finally {
      await old.close();
    }
    const again = await openUi(`?token=${ROTATED_TOKEN}`);
    try {
      await waitForTexts(again.page, '#hub tr', [`n1 | ${node.url} | ready | yes`], 'the hub with the new token');
      await waitForTexts(again.page, '#tree .id', ['listener:tcp-in', 'listener:hub'], 'the tree with the new token');
      expect(await texts(again.page, '#error')).toEqual(['']);
    } finally {
      await again.context.close();
    }
  });
});
