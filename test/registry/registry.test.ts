import pino from 'pino';
import { filter, firstValueFrom } from 'rxjs';
import { describe, expect, test } from 'vitest';
import { Supervisor } from '../../src/supervisors/supervisor.ts';
import { ServiceRegistry, RegistryFullError, type RegistryEvent } from '../../src/registry/registry.ts';
import { parseRegistration, RegistrationError, type Registration } from '../../src/registry/service.ts';
import { resolveDiscovery, discoveryChanged } from '../../src/registry/discovery.ts';
import { live } from '../../src/runtime/live.ts';
import { until } from '../helpers/daemon.ts';
import type { GatehouseConfig } from '../../src/config/types.ts';

const log = pino({ level: 'silent' });

/** A registration as the admin API would validate it, with any ttl (tests use short ones). */
const reg = (id: string, name = 'app', extra: Partial<Registration> = {}): Registration => ({
  ...parseRegistration({ id, name, address: `127.0.0.1:${9000 + Number(id.replace(/\D/g, '') || 0)}` }),
  ...extra,
});

async function startRegistry(opts: { maxInstances?: number } = {}) {
  const registry = new ServiceRegistry({ log, ...opts });
  const root = new Supervisor({ id: 'root', children: [registry.child()] }, { log });
  await root.start();
  const events: RegistryEvent[] = [];
  const sub = registry.events$.subscribe((e) => events.push(e));
  return {
    registry,
    root,
    events,
    async [Symbol.asyncDispose]() {
      sub.unsubscribe();
      await root.shutdown('infinity');
      registry.close();
    },
  };
}

describe('registration validation', () => {
  test('a valid body is normalised: ttl in ms, tags deduplicated, an id generated', () => {
    const r = parseRegistration({ name: 'app', address: '10.0.0.1:80', tags: ['a', 'a', 'b'], metadata: { weight: '3' }, ttl: '10s' });
    expect(r).toMatchObject({ name: 'app', address: '10.0.0.1:80', host: '10.0.0.1', port: 80, tags: ['a', 'b'], metadata: { weight: '3' }, ttl: 10_000 });
    expect(r.id).toMatch(/^app-[0-9a-f-]{36}$/);
    expect(parseRegistration({ name: 'v6', address: '[::1]:8080', ttl: 0 })).toMatchObject({ host: '::1', port: 8080, ttl: 0 });
  });

  test('every problem is named with its field', () => {
    let err: unknown;
    try {
      parseRegistration({ name: 'bad name', address: '127.0.0.1:99999', tags: 'x', ttl: '10 parsecs', extra: 1, metadata: { a: 1 } });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RegistrationError);
    const fields = (err as RegistrationError).problems.map((p) => p.field).sort();
    expect(fields).toEqual(['address', 'extra', 'metadata.a', 'name', 'tags', 'ttl']);
    expect(() => parseRegistration({ name: 'a', address: '127.0.0.1:1', ttl: '500ms' })).toThrow(/ttl: between 1s and 24h/);
    expect(() => parseRegistration([])).toThrow(/must be a JSON object/);
    expect(() => parseRegistration({ name: 'a', address: 'host_with_underscore:1' })).toThrow(/address/);
  });
});

describe('ServiceRegistry (one actor per instance)', () => {
  test('register, replace, heartbeat, deregister: events in order, actors and indexes cleaned', async () => {
    await using r = await startRegistry();
    const { registry, events } = r;
    expect((await registry.register(reg('a1'))).created).toBe(true);
    expect((await registry.register(reg('a2'))).created).toBe(true);
    expect((await registry.register(reg('b1', 'other'))).created).toBe(true);
    expect(registry.list('app').map((s) => s.id)).toEqual(['a1', 'a2']);
    expect(registry.list().length).toBe(3);
    expect(live.list().filter((a) => a.type === 'service').map((a) => a.id).sort()).toEqual(['service:a1', 'service:a2', 'service:b1']);

    // Same id again: replaced in place (its actor stays), 'updated'.
    const before = live.list().find((a) => a.id === 'service:a1');
    const again = await registry.register(reg('a1', 'app', { tags: ['canary'] }));
    expect(again.created).toBe(false);
    expect(registry.get('a1')?.tags).toEqual(['canary']);
    expect(live.list().find((a) => a.id === 'service:a1')).toBe(before);

    expect(await registry.heartbeat('a2')).toMatchObject({ id: 'a2' });
    expect(await registry.heartbeat('nope')).toBeUndefined();
    expect(await registry.deregister('a2')).toBe(true);
    expect(await registry.deregister('a2')).toBe(false);
    expect(registry.list('app').map((s) => s.id)).toEqual(['a1']);
    expect(events.map((e) => `${e.type}:${e.service.id}`)).toEqual(['registered:a1', 'registered:a2', 'registered:b1', 'updated:a1', 'deregistered:a2']);
    // The supervisor keeps no spec of a deregistered instance.
    const sup = r.root.child('registry') as Supervisor;
    expect(sup.whichChildren().map((c) => c.id).sort()).toEqual(['service:a1', 'service:b1']);
  });

  test('an instance without heartbeats expires after its ttl; heartbeats keep it; re-registering the id works', async () => {
    await using r = await startRegistry();
    const { registry, events } = r;
    await registry.register(reg('x1', 'app', { ttl: 150 }));
    await registry.register(reg('x2', 'app', { ttl: 150 }));
    const t0 = Date.now();
    expect(Date.parse(registry.get('x1')!.expiresAt!)).toBeGreaterThan(t0);
    // x2's client heartbeats every 40 ms (as a service would) until x1 has expired.
    const heartbeats = setInterval(() => void registry.heartbeat('x2'), 40);
    try {
      await firstValueFrom(registry.events$.pipe(filter((e) => e.type === 'expired')));
    } finally {
      clearInterval(heartbeats);
    }
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
    expect(registry.get('x2')).toBeDefined();
    expect(events.filter((e) => e.type === 'expired').map((e) => e.service.id)).toEqual(['x1']);
    await until(() => !(r.root.child('registry') as Supervisor).whichChildren().some((c) => c.id === 'service:x1'), 2_000, 'the expired spec removed');
    // x2 expires too once nobody beats it.
    await until(() => registry.get('x2') === undefined, 2_000, 'x2 expired');
    expect(await registry.register(reg('x1'))).toMatchObject({ created: true });
    expect(registry.list().map((s) => s.id)).toEqual(['x1']);
    expect(registry.get('x1')!.expiresAt).toBeNull();
  });

  test('a crashed instance actor is restarted with its registration; a full registry refuses more', async () => {
    await using r = await startRegistry({ maxInstances: 2 });
    const { registry } = r;
    await registry.register(reg('c1'));
    await registry.register(reg('c2'));
    await expect(registry.register(reg('c3'))).rejects.toBeInstanceOf(RegistryFullError);
    const a = live.list().find((x) => x.id === 'service:c1') as unknown as { crash(): boolean };
    expect(a.crash()).toBe(true);
    await (r.root.child('registry') as Supervisor).settled();
    await until(() => registry.get('c1') !== undefined, 2_000, 'c1 back');
    expect(live.list().find((x) => x.id === 'service:c1')).not.toBe(a);
    expect(registry.list().map((s) => s.id).sort()).toEqual(['c1', 'c2']);
  });
});

describe('discovery resolution', () => {
  const base = {
    upstreams: [
      { name: 'app', backends: [{ host: '127.0.0.1', port: 1, address: '127.0.0.1:1', weight: 1 }], discovery: { service: 'app', tags: ['v2'] } },
      { name: 'static', backends: [{ host: '127.0.0.1', port: 2, address: '127.0.0.1:2', weight: 1 }] },
    ],
    listeners: [{ name: 'hub', protocol: 'hub', discovery: { service: 'nodes', path: '/gate' } }],
  } as unknown as GatehouseConfig;

  test('upstream backends are the static ones plus tagged instances; hub nodes are ws://ADDRESS+path', () => {
    const instances = {
      app: [
        reg('1', 'app', { tags: ['v2'], metadata: { weight: '5' } }),
        reg('2', 'app', { tags: ['v1'] }),
        { ...reg('3', 'app', { tags: ['v2'] }), address: '127.0.0.1:1' },
      ],
      nodes: [reg('7', 'nodes', { metadata: { scheme: 'wss' } })],
    } as Record<string, Registration[]>;
    const eff = resolveDiscovery(base, (s) => (instances[s] ?? []).map((x) => ({ ...x, expiresAt: null })));
    expect(eff.upstreams[0]!.backends.map((b) => `${b.address}*${b.weight}`)).toEqual(['127.0.0.1:1*1', '127.0.0.1:9001*5']);
    expect(eff.upstreams[1]).toBe(base.upstreams[1]);
    expect((eff.listeners[0] as { nodes: unknown }).nodes).toEqual([{ id: '7', url: 'wss://127.0.0.1:9007/gate' }]);
    expect(discoveryChanged(base, eff)).toBe(true);
    expect(discoveryChanged(eff, resolveDiscovery(base, (s) => (instances[s] ?? []).map((x) => ({ ...x, expiresAt: null }))))).toBe(false);
  });
});
