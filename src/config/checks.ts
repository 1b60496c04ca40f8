/**
 * Cross-field rules the schema cannot express: references between sections, duplicate names and
 * addresses, keys that exclude or require each other. They run on the raw YAML data, next to the
 * schema rather than after it, so that one `gatehouse check` reports every problem at once; each
 * rule skips values the schema already rejects.
 */
import { isLoopbackHost, weakSecretProblem } from '../auth/policy.ts';
import { parseDuration, parseHostPort, parseListen } from './units.ts';
import type { PathIssue } from './messages.ts';

type Path = (string | number)[];
type Obj = Record<string, unknown>;

const obj = (v: unknown): Obj | undefined => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Obj) : undefined);
const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const dotted = (p: Path) => p.join('.');

function tryParse<T>(f: () => T): T | undefined {
  try {
    return f();
  } catch {
    return undefined;
  }
}

/**
 * Checks the rules between keys of a raw (YAML-parsed, not yet validated) config.
 *
 * @example
 * crossChecks({ listeners: [{ name: 'in', protocol: 'tcp', listen: 80, upstream: 'nope' }] });
 * // [{ path: ['listeners', 0, 'upstream'], message: 'unknown upstream "nope" (none defined)', at: 'value' }]
 */
export function crossChecks(raw: unknown): PathIssue[] {
  const out: PathIssue[] = [];
  const add = (path: Path, message: string) => out.push({ path, message, at: 'value' });
  const root = obj(raw) ?? {};

  const upstreams = list(root.upstreams);
  const upstreamNames = new Set(upstreams.map((u) => str(obj(u)?.name)).filter((n) => n !== undefined));
  const known = upstreamNames.size > 0 ? `known: ${[...upstreamNames].join(', ')}` : 'none defined';
  const ref = (v: unknown, path: Path) => {
    const n = str(v);
    if (n !== undefined && !upstreamNames.has(n)) add(path, `unknown upstream ${JSON.stringify(n)} (${known})`);
  };

  unique(upstreams.map((u) => str(obj(u)?.name)), ['upstreams'], ['name'], 'upstream name', add);
  unique(list(root.listeners).map((l) => str(obj(l)?.name)), ['listeners'], ['name'], 'listener name', add);
  unique(list(root.actors).map((a) => str(obj(a)?.name)), ['actors'], ['name'], 'actor name', add);

  upstreams.forEach((u, i) => checkUpstream(obj(u), ['upstreams', i], add));
  // An HTTP pool's connections serve many clients in turn: no one client address can go in a
  // PROXY protocol header at their start.
  const proxied = new Map(upstreams.map((u, i) => [str(obj(u)?.name), obj(u)?.sendProxyProtocol !== undefined ? i : -1]));
  const httpUses = new Set<string>();
  list(root.listeners).forEach((l, i) => {
    const o = obj(l);
    const at: Path = ['listeners', i];
    if (!o) return;
    if (o.protocol === 'tcp') ref(o.upstream, [...at, 'upstream']);
    if (o.protocol === 'http') {
      const routes = list(o.routes);
      for (const r of routes) {
        const u = str(obj(r)?.upstream);
        if (u !== undefined) httpUses.add(u);
        for (const s of list(obj(r)?.split)) {
          const su = str(obj(s)?.upstream);
          if (su !== undefined) httpUses.add(su);
        }
      }
      const names = routes.map((r, j) => (obj(r)?.name === undefined ? `route-${j}` : str(obj(r)?.name)));
      unique(names, [...at, 'routes'], ['name'], 'route name', add);
      routes.forEach((r, j) => checkRoute(obj(r), [...at, 'routes', j], ref, add));
    }
    if (o.protocol === 'hub') {
      const clientAuth = obj(obj(o.tls)?.clientAuth);
      if (o.auth === undefined && !(clientAuth !== undefined && clientAuth.required !== false)) {
        add([...at, 'auth'], "required: a hub listener needs auth.jwt (the token's sub is the user id), or tls.clientAuth with required: true (the client certificate's CN is the user id)");
      }
      const jwt = obj(obj(o.auth)?.jwt);
      checkJwt(jwt, [...at, 'auth', 'jwt'], add);
      if (jwt?.forwardClaims !== undefined) add([...at, 'auth', 'jwt', 'forwardClaims'], 'applies to http routes only: a hub client\'s user id is its sub');
      if (o.nodes === undefined && o.discovery === undefined) add([...at, 'nodes'], 'required: a hub listener needs nodes or discovery');
      if (o.nodes !== undefined && o.discovery !== undefined) add([...at, 'discovery'], 'use nodes or discovery, not both');
      unique(list(o.nodes).map((n) => str(obj(n)?.id)), [...at, 'nodes'], ['id'], 'node id', add);
    }
  });

  checkAddresses(root, add);
  checkAdmin(obj(root.admin), add);
  for (const name of httpUses) {
    const i = proxied.get(name);
    if (i !== undefined && i >= 0) add(['upstreams', i, 'sendProxyProtocol'], `upstream ${JSON.stringify(name)} is used by an http route: its pooled connections serve many clients, so no PROXY protocol header can name one (use it from tcp listeners only)`);
  }
  return out;
}

// Anyone who can reach the admin API can drain or reload the daemon: off this machine, only
// with a token.
function checkAdmin(admin: Obj | undefined, add: (p: Path, m: string) => void) {
  const listen = admin?.listen;
  if (typeof listen !== 'string' && typeof listen !== 'number') return;
  const hp = tryParse(() => parseListen(listen));
  if (!hp || isLoopbackHost(hp.host) || admin?.token !== undefined) return;
  add(['admin', 'listen'], `${hp.address} is not a loopback address: set admin.token too (anyone who can reach the admin API could drain or reload the daemon)`);
}

function unique(values: (string | undefined)[], base: Path, leaf: Path, what: string, add: (p: Path, m: string) => void) {
  const first = new Map<string, number>();
  values.forEach((v, i) => {
    if (v === undefined) return;
    const seen = first.get(v);
    if (seen === undefined) first.set(v, i);
    else add([...base, i, ...leaf], `duplicate ${what} ${JSON.stringify(v)} (first at ${dotted([...base, seen])})`);
  });
}

function checkUpstream(u: Obj | undefined, at: Path, add: (p: Path, m: string) => void) {
  if (!u) return;
  const backends = list(u.backends);
  if (backends.length === 0 && u.discovery === undefined) {
    add([...at, 'backends'], 'required: an upstream needs backends or discovery');
  }
  const addresses = backends.map((b) => {
    const a = str(obj(b)?.address) ?? str(b);
    const hp = a === undefined ? undefined : tryParse(() => parseHostPort(a));
    return hp && `${hp.host}:${hp.port}`;
  });
  unique(addresses, [...at, 'backends'], [], 'backend', add);
  const hc = obj(u.healthCheck);
  if (hc) {
    const ms = (v: unknown, dflt: number) =>
      v === undefined ? dflt : typeof v === 'string' || typeof v === 'number' ? tryParse(() => parseDuration(v)) : undefined;
    const interval = ms(hc.interval, 1_000);
    const timeout = ms(hc.timeout, 500);
    if (interval !== undefined && timeout !== undefined && timeout > interval) {
      add([...at, 'healthCheck', 'timeout'], `must not be longer than the interval (${interval} ms)`);
    }
  }
}

function checkRoute(r: Obj | undefined, at: Path, ref: (v: unknown, p: Path) => void, add: (p: Path, m: string) => void) {
  if (!r) return;
  if (r.upstream === undefined && r.split === undefined) add([...at, 'upstream'], 'required: a route needs upstream or split');
  if (r.upstream !== undefined && r.split !== undefined) add([...at, 'split'], 'use upstream or split, not both');
  ref(r.upstream, [...at, 'upstream']);
  const split = list(r.split);
  split.forEach((s, k) => ref(obj(s)?.upstream, [...at, 'split', k, 'upstream']));
  if (split.length > 0 && split.every((s) => obj(s)?.weight === 0)) add([...at, 'split'], 'at least one weight must be greater than 0');
  const sticky = obj(r.sticky);
  if (sticky) {
    if ((sticky.header === undefined) === (sticky.cookie === undefined)) add([...at, 'sticky'], 'needs exactly one of header or cookie');
  }
  const auth = obj(r.auth);
  if (auth) checkJwt(obj(auth.jwt), [...at, 'auth', 'jwt'], add);
  const key = str(obj(r.rateLimit)?.key);
  if (key?.startsWith('jwt:') && !auth) add([...at, 'rateLimit', 'key'], `${key} needs auth.jwt on this route`);
  const cors = obj(r.cors);
  if (cors?.credentials === true && list(cors.origins).includes('*')) {
    add([...at, 'cors', 'credentials'], 'credentials cannot be used with origin "*" (browsers reject it): list the origins');
  }
}

function checkJwt(jwt: Obj | undefined, at: Path, add: (p: Path, m: string) => void) {
  if (!jwt) return;
  const keys = (['secret', 'publicKey', 'jwksUrl'] as const).filter((k) => jwt[k] !== undefined);
  if (keys.length === 0) add(at, 'needs one of secret, publicKey or jwksUrl');
  for (const k of keys.slice(1)) add([...at, k], `use only one of secret, publicKey and jwksUrl (${keys[0]} is set)`);
  if (keys.length !== 1) return;
  if (keys[0] !== 'secret' && jwt.algorithms === undefined) {
    add([...at, 'algorithms'], `required with ${keys[0]}: list the algorithms your issuer signs with, like [RS256]`);
  }
  const secret = str(jwt.secret);
  if (secret !== undefined && secret !== '') {
    const algs = jwt.algorithms === undefined ? ['HS256'] : list(jwt.algorithms).filter((a) => typeof a === 'string');
    const weak = weakSecretProblem(secret, algs as string[]);
    if (weak) add([...at, 'secret'], weak);
  }
  list(jwt.algorithms).forEach((alg, i) => {
    if (typeof alg !== 'string') return;
    const hmac = alg.startsWith('HS');
    if (hmac && keys[0] !== 'secret') add([...at, 'algorithms', i], `${alg} needs a secret, not ${keys[0]}`);
    if (!hmac && keys[0] === 'secret') add([...at, 'algorithms', i], `${alg} needs publicKey or jwksUrl, not a secret`);
  });
}

const WILDCARD = new Set(['0.0.0.0', '::', '']);

function checkAddresses(root: Obj, add: (p: Path, m: string) => void) {
  const bound: { path: Path; label: string; host: string; port: number }[] = [];
  const claim = (v: unknown, path: Path, label: string) => {
    if (typeof v !== 'string' && typeof v !== 'number') return;
    const hp = tryParse(() => parseListen(v));
    if (!hp || hp.port === 0) return;
    const clash = bound.find((b) => b.port === hp.port && (b.host === hp.host || WILDCARD.has(b.host) || WILDCARD.has(hp.host)));
    if (clash) add(path, `address ${hp.address} is already used by ${clash.label}`);
    bound.push({ path, label, host: hp.host, port: hp.port });
  };
  const admin = obj(root.admin);
  claim(admin?.listen ?? '127.0.0.1:9901', ['admin', 'listen'], 'admin.listen');
  list(root.listeners).forEach((l, i) => {
    const o = obj(l);
    claim(o?.listen, ['listeners', i, 'listen'], `listeners.${i}${str(o?.name) ? ` (${str(o?.name)})` : ''}`);
  });
}
