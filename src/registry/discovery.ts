import type { BackendConfig, GatehouseConfig, HubNodeConfig, ListenerConfig, UpstreamConfig } from '../config/types.ts';
import type { ServiceInstance } from './service.ts';

/** The live instances of a service (the registry's `list`). */
export type InstancesOf = (service: string) => ServiceInstance[];

/** Most weight a registration's `metadata.weight` may ask for (as config weights). */
const MAX_WEIGHT = 1_000;

const tagged = (s: ServiceInstance, tags: readonly string[] | undefined): boolean => !tags || tags.every((t) => s.tags.includes(t));

/** A discovered instance as a backend: weight from `metadata.weight` (an integer 1..1000), else 1. */
function backendOf(s: ServiceInstance): BackendConfig {
  const w = Number(s.metadata.weight);
  return { host: s.host, port: s.port, address: s.address, weight: Number.isInteger(w) && w >= 1 && w <= MAX_WEIGHT ? w : 1 };
}

function resolveUpstream(u: UpstreamConfig, instances: InstancesOf): UpstreamConfig {
  if (!u.discovery) return u;
  const tags = u.discovery.tags;
  const backends = [...u.backends];
  for (const s of instances(u.discovery.service)) {
    // A static backend with the same address keeps its config.
    if (tagged(s, tags) && !backends.some((b) => b.address === s.address)) backends.push(backendOf(s));
  }
  return { ...u, backends };
}

function resolveListener(l: ListenerConfig, instances: InstancesOf): ListenerConfig {
  if (l.protocol !== 'hub' || !l.discovery) return l;
  const { service, path, tags } = l.discovery;
  const nodes: HubNodeConfig[] = instances(service)
    .filter((s) => tagged(s, tags))
    .map((s) => ({ id: s.id, url: `${s.metadata.scheme === 'wss' ? 'wss' : 'ws'}://${s.address}${path}` }));
  return { ...l, nodes };
}

/**
 * The effective config: `base` (the file) with every `discovery` resolved against the registry.
 * An upstream's backends are its static ones plus the live instances of its service (with all of
 * its `tags`); a hub listener's nodes are the instances of its service, each as
 * `ws://ADDRESS` + `path` (`wss://` when the instance's `metadata.scheme` is `wss`), with the
 * instance id as node id. Parts without `discovery` are returned as they are (same objects), so
 * the config diff sees no change there.
 *
 * @example
 * const effective = resolveDiscovery(fileConfig, (name) => registry.list(name));
 */
export function resolveDiscovery(base: GatehouseConfig, instances: InstancesOf): GatehouseConfig {
  if (!base.upstreams.some((u) => u.discovery) && !base.listeners.some((l) => l.protocol === 'hub' && l.discovery)) return base;
  return { ...base, upstreams: base.upstreams.map((u) => resolveUpstream(u, instances)), listeners: base.listeners.map((l) => resolveListener(l, instances)) };
}

/** True when the discovered parts of two effective configs differ (what a registry change must apply). */
export function discoveryChanged(a: GatehouseConfig, b: GatehouseConfig): boolean {
  const ups = (c: GatehouseConfig) => JSON.stringify(c.upstreams.filter((u) => u.discovery).map((u) => [u.name, u.backends]));
  const hubs = (c: GatehouseConfig) => JSON.stringify(c.listeners.flatMap((l) => (l.protocol === 'hub' && l.discovery ? [[l.name, l.nodes]] : [])));
  return ups(a) !== ups(b) || hubs(a) !== hubs(b);
}
