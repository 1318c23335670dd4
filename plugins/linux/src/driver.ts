/**
 * The Linux driver: instances are network namespaces on this host (`externalId` is the
 * namespace's name, or `if:NAME` for an instance reached through an existing host interface).
 * NICs are veth pairs — the instance side carries the NIC's name, MAC and addresses, the host side
 * joins the bridge named by the NIC's network (created with the gateway addresses when missing).
 * NAT, firewall and counters go through the nftables dataplane; shaping through tc on the host
 * side of each NIC.
 */
import {
  DRIVER_API_VERSION,
  DriverConfigError,
  TransientError,
  run,
  sortObservation,
  toDriverError,
  validateDesiredState,
  type ApplyResult,
  type DesiredState,
  type DiscoveredInstance,
  type DriverCapabilities,
  type DriverContext,
  type ExecTarget,
  type NetworkDriver,
  type ObjectResult,
  type StatsResult,
} from '@gatehouse/sdk';
import { Dataplane, applyShaping, dataplaneStats, observeShaping, type Link, removeShaping, shapingDifferences, shapingFor } from '@gatehouse/dataplane';
import { BRIDGE_ALIAS, VETH_PREFIX, cidrs, createVeth, deleteLink, ensureBridge, hostVethName, instanceTag, links, namespaces, peerOf } from './links.js';

/** The plugin's configuration. */
export interface LinuxDriverConfig {
  /** Run host commands in this network namespace instead of the agent's own (the sandbox, tests). */
  hostNetns?: string;
  /** Only namespaces whose names start with this are instances (default: every namespace). */
  namespacePrefix?: string;
}

/** Checks a configuration object; throws DriverConfigError with the field's path. */
export function validateConfig(config: unknown): LinuxDriverConfig {
  if (config === undefined || config === null) return {};
  if (typeof config !== 'object' || Array.isArray(config)) throw new DriverConfigError('config', config, 'must be an object');
  const c = config as Record<string, unknown>;
  for (const key of Object.keys(c)) {
    if (key !== 'hostNetns' && key !== 'namespacePrefix') throw new DriverConfigError(`config.${key}`, c[key], 'is not a setting of the linux plugin');
  }
  for (const key of ['hostNetns', 'namespacePrefix'] as const) {
    const v = c[key];
    if (v !== undefined && (typeof v !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(v)))
      throw new DriverConfigError(`config.${key}`, v, 'must be a name of letters, digits, ".", "_" or "-" (at most 64)');
  }
  return c as LinuxDriverConfig;
}

export const CAPABILITIES: DriverCapabilities = {
  portForwards: { implementation: 'dataplane', protocols: ['tcp', 'udp'], portRanges: true, ipv6: true, sourceAllowLists: true },
  firewall: {
    implementation: 'dataplane',
    directions: ['inbound', 'outbound'],
    actions: ['allow', 'reject', 'drop'],
    priorities: true,
    ipv6: true,
    icmp: true,
  },
  shaping: { implementation: 'dataplane', ingress: true, egress: true, burst: true },
  nics: { max: 32, hotplug: true, staticAddressing: true },
};

type Instance = DesiredState['instances'][number];

/** Everything of a desired state that the host side (links, addresses, routing, shaping) depends on. */
function hostSideKey(desired: DesiredState): string {
  return JSON.stringify([desired.publicAddresses, desired.instances.map((i) => [i.id, i.name, i.externalId, i.nics, i.bandwidth])]);
}

/** Where an instance's NIC is on this host. */
interface NicPlace {
  instanceId: string;
  nicId: string;
  hostInterface: string;
}

export class LinuxDriver implements NetworkDriver {
  readonly id = 'linux';
  readonly apiVersion = DRIVER_API_VERSION;
  readonly capabilities = CAPABILITIES;
  private readonly host: ExecTarget;
  private readonly dataplane: Dataplane;
  /** The host side (NICs, shaping) of the last apply that placed every NIC and limit. */
  private lastHostSide: { key: string; places: NicPlace[]; results: ObjectResult[] } | undefined;

  constructor(private readonly config: LinuxDriverConfig) {
    this.host = config.hostNetns ? { netns: config.hostNetns } : {};
    this.dataplane = new Dataplane(this.host);
  }

  async discover(): Promise<{ instances: DiscoveredInstance[] }> {
    const hostLinks = await links(this.host);
    const instances: DiscoveredInstance[] = [];
    for (const name of await this.instanceNamespaces()) {
      const nics = (await links({ netns: name }))
        .filter((l) => l.ifname !== 'lo')
        .map((l) => ({ name: l.ifname, mac: l.address ?? '', addresses: cidrs(l), hostInterface: peerOf(l, hostLinks)?.ifname }));
      instances.push({ externalId: name, name, running: true, nics });
    }
    return { instances };
  }

  async apply(ctx: DriverContext, input: { desired: DesiredState; repair?: boolean }): Promise<ApplyResult> {
    const desired = validateDesiredState(input.desired, 'input.desired');
    // Only forwards or firewall rules changed since a clean apply: the NICs, routing and shaping
    // are as that apply left them (drift checks and repairs cover the rest), so only the nft
    // transaction runs — what keeps one new forward among 60,000 at tens of milliseconds.
    const hostSide = hostSideKey(desired);
    if (!input.repair && this.lastHostSide?.key === hostSide) {
      const results: ObjectResult[] = [...this.lastHostSide.results];
      const changed = await this.applyTable(ctx, desired, this.lastHostSide.places, false, results);
      return { changed, objects: results };
    }
    this.lastHostSide = undefined;
    const results: ObjectResult[] = [];
    let changed = false;
    // NICs first: forwards and firewalls are keyed on addresses, shaping needs the host side
    const places: NicPlace[] = [];
    const known = new Set(await namespaces());
    const hostLinks = await links(this.host);
    for (const instance of desired.instances) {
      const out = await this.ensureNics(instance, known, hostLinks).catch((err: unknown) => ({ error: toDriverError(err), changed: false, places: [] }));
      changed ||= out.changed;
      places.push(...out.places);
      for (const nic of instance.nics) {
        const placed = out.places.some((p) => p.nicId === nic.id);
        results.push(
          placed
            ? { objectType: 'nic', objectId: nic.id, status: 'applied' }
            : {
                objectType: 'nic',
                objectId: nic.id,
                status: 'failed',
                error: ('error' in out
                  ? out.error
                  : new TransientError(`instance ${instance.name}: NIC ${nic.name} (${nic.mac}) is not on this host`)
                ).toJSON(),
              },
        );
      }
    }
    changed ||= await this.removeStaleLinks(desired, ctx);
    if (desired.instances.length > 0) await this.enableForwarding(desired);
    changed = (await this.applyTable(ctx, desired, places, input.repair ?? false, results)) || changed;
    for (const instance of desired.instances) {
      for (const limit of instance.bandwidth) {
        const targets = places.filter((p) => p.instanceId === instance.id && (limit.nicId === null || p.nicId === limit.nicId));
        try {
          if (targets.length === 0) throw new TransientError(`instance ${instance.name} has no NIC on this host to shape`);
          for (const place of targets)
            changed = (await applyShaping({ iface: place.hostInterface, spec: shapingFor(instance, place.nicId) }, this.host)).changed || changed;
          results.push({ objectType: 'bandwidth_limit', objectId: limit.id, status: 'applied' });
        } catch (err) {
          results.push({ objectType: 'bandwidth_limit', objectId: limit.id, status: 'failed', error: toDriverError(err).toJSON() });
        }
      }
      // NICs without a limit carry no shaping of ours
      for (const place of places.filter((p) => p.instanceId === instance.id && shapingFor(instance, p.nicId) === null)) {
        changed = (await applyShaping({ iface: place.hostInterface, spec: null }, this.host)).changed || changed;
      }
    }
    const hostResults = results.filter((r) => r.objectType === 'nic' || r.objectType === 'bandwidth_limit');
    if (hostResults.every((r) => r.status === 'applied')) this.lastHostSide = { key: hostSide, places, results: hostResults };
    return { changed, objects: results };
  }

  /** The nft transaction and the results of forwards and firewall rules; true when the table changed. */
  private async applyTable(ctx: DriverContext, desired: DesiredState, places: NicPlace[], force: boolean, results: ObjectResult[]): Promise<boolean> {
    let changed = false;
    try {
      const nft = await this.dataplane.apply(desired, { force });
      changed = nft.changed;
      for (const instance of desired.instances) {
        // installed either way, but an instance that is not here cannot be reached through them
        const absent = instance.nics.length > 0 && !places.some((p) => p.instanceId === instance.id);
        const status = absent
          ? {
              status: 'failed' as const,
              error: new TransientError(`instance ${instance.name} (${instance.externalId ?? 'no external id'}) is not on this host`).toJSON(),
            }
          : { status: 'applied' as const };
        for (const f of instance.portForwards) results.push({ objectType: 'port_forward', objectId: f.id, ...status });
        for (const r of instance.firewall.rules) results.push({ objectType: 'firewall_rule', objectId: r.id, ...status });
      }
    } catch (err) {
      const error = toDriverError(err).toJSON();
      ctx.logger.error('nftables transaction failed; the previous ruleset stays', { error: error.message });
      for (const instance of desired.instances) {
        for (const f of instance.portForwards) results.push({ objectType: 'port_forward', objectId: f.id, status: 'failed', error });
        for (const r of instance.firewall.rules) results.push({ objectType: 'firewall_rule', objectId: r.id, status: 'failed', error });
      }
    }
    return changed;
  }

  async observe(_ctx: DriverContext, input: { desired?: DesiredState }): Promise<{ state: ReturnType<typeof sortObservation> }> {
    const { forwards, firewalls } = await this.dataplane.observe();
    const shaping = input.desired ? await observeShaping(await this.places(input.desired), this.host) : [];
    return { state: sortObservation({ forwards, firewalls: firewalls.map(({ unrecognized: _, ...f }) => f), shaping }) };
  }

  /** How the live table and shaping differ from the last apply (see Dataplane.drift); `thorough` also compares map elements. */
  async drift(_ctx: DriverContext, input: { desired: DesiredState; thorough: boolean }): Promise<{ differences: string[] }> {
    const differences = (await this.dataplane.drift({ elements: input.thorough })) ?? [];
    const live = await this.places(input.desired);
    for (const was of this.lastHostSide?.places ?? []) {
      if (!live.some((p) => p.nicId === was.nicId && p.hostInterface === was.hostInterface))
        differences.push(`NIC ${was.nicId} (${was.hostInterface}) is gone`);
    }
    differences.push(...(await shapingDifferences(live, input.desired, this.host)));
    return { differences };
  }

  async stats(_ctx: DriverContext, input: { desired?: DesiredState }): Promise<StatsResult> {
    return dataplaneStats(this.dataplane, input.desired ? await this.places(input.desired) : [], this.host);
  }

  async release(_ctx: DriverContext, input: { instanceId: string }): Promise<{ released: boolean }> {
    this.lastHostSide = undefined; // links go: the next apply re-checks the host side
    let released = await this.dataplane.release(input.instanceId);
    const tag = `${VETH_PREFIX}${instanceTag(input.instanceId)}`;
    for (const link of await links(this.host)) {
      if (!link.ifname.startsWith(tag)) continue;
      await removeShaping(link.ifname, this.host);
      await deleteLink(this.host, link.ifname);
      released = true;
    }
    return { released };
  }

  async gc(_ctx: DriverContext, input: { validInstanceIds: readonly string[] }): Promise<{ removedInstanceIds: string[] }> {
    this.lastHostSide = undefined;
    const removed = new Set(await this.dataplane.gc(input.validInstanceIds));
    const valid = new Set(input.validInstanceIds.map((id) => `${VETH_PREFIX}${instanceTag(id)}`));
    for (const link of await links(this.host)) {
      if (!link.ifname.startsWith(VETH_PREFIX) || link.ifname.length !== 14 || valid.has(link.ifname.slice(0, 12))) continue;
      await removeShaping(link.ifname, this.host);
      await deleteLink(this.host, link.ifname);
      removed.add(`(veth ${link.ifname})`);
    }
    return { removedInstanceIds: [...removed] };
  }

  /** Routing between the public side and the instances: IPv4 always, IPv6 only when an instance has an IPv6 address. */
  private async enableForwarding(desired: DesiredState): Promise<void> {
    const v6 = desired.instances.some((i) => i.nics.some((n) => n.addresses.some((a) => a.address.includes(':'))));
    const settings = ['net.ipv4.ip_forward', ...(v6 ? ['net.ipv6.conf.all.forwarding'] : [])];
    for (const key of settings) {
      const now = (await run('sysctl', ['-n', key], this.host)).trim();
      if (now !== '1') await run('sysctl', ['-q', '-w', `${key}=1`], this.host);
    }
  }

  private async instanceNamespaces(): Promise<string[]> {
    const all = await namespaces();
    return all.filter((n) => n !== this.config.hostNetns && (!this.config.namespacePrefix || n.startsWith(this.config.namespacePrefix)));
  }

  /** Where each desired NIC is, without changing anything. */
  private async places(desired: DesiredState): Promise<NicPlace[]> {
    const hostLinks = await links(this.host);
    const places: NicPlace[] = [];
    for (const instance of desired.instances) {
      const netns = instanceNetns(instance);
      const inside = netns ? await links({ netns }) : [];
      instance.nics.forEach((nic) => {
        const host = netns
          ? peerOf(inside.find((l) => l.address === nic.mac.toLowerCase()) ?? ({} as Link), hostLinks)
          : hostLinks.find((l) => l.ifname === instance.externalId!.slice(3));
        if (host) places.push({ instanceId: instance.id, nicId: nic.id, hostInterface: host.ifname });
      });
    }
    return places;
  }

  /** Makes every NIC of an instance exist with its addresses; returns where they are. */
  private async ensureNics(instance: Instance, known: Set<string>, hostLinks: Link[]): Promise<{ changed: boolean; places: NicPlace[] }> {
    const netns = instanceNetns(instance);
    if (!netns) {
      // an instance behind an existing host interface: nothing to create
      const ifname = instance.externalId!.slice(3);
      const link = hostLinks.find((l) => l.ifname === ifname);
      if (!link) throw new TransientError(`instance ${instance.name}: interface ${ifname} does not exist on this host`);
      return { changed: false, places: instance.nics.map((n) => ({ instanceId: instance.id, nicId: n.id, hostInterface: ifname })) };
    }
    if (!known.has(netns)) throw new TransientError(`instance ${instance.name}: network namespace ${netns} does not exist (stopped or deleted?)`);
    let changed = false;
    const places: NicPlace[] = [];
    let inside = await links({ netns });
    for (const [index, nic] of instance.nics.entries()) {
      let link = inside.find((l) => l.address === nic.mac.toLowerCase());
      if (!link) {
        const hostName = hostVethName(instance.id, index);
        await deleteLink(this.host, hostName); // a half-made pair from an interrupted apply
        await createVeth(this.host, hostName, netns, nic.name, nic.mac.toLowerCase());
        changed = true;
        inside = await links({ netns });
        hostLinks = await links(this.host);
        link = inside.find((l) => l.address === nic.mac.toLowerCase())!;
      }
      const host = peerOf(link, hostLinks);
      if (!host) throw new TransientError(`instance ${instance.name}: NIC ${link.ifname} has no veth peer on this host`);
      // the host side joins the NIC's network, a bridge holding the gateways
      const own = nic.addresses.filter((a) => !a.delegated);
      const gateways = [...new Set(own.filter((a) => a.gateway).map((a) => `${a.gateway}/${a.prefixLength}`))];
      if (host.ifname.startsWith(VETH_PREFIX)) {
        changed = (await ensureBridge(this.host, nic.network, gateways)) || changed;
        if (!(host as Link & { master?: string }).master || (host as Link & { master?: string }).master !== nic.network) {
          await run('ip', ['link', 'set', host.ifname, 'master', nic.network], this.host);
          changed = true;
        }
      }
      // static addresses inside the instance, and its default routes
      const have = new Set(cidrs(link));
      for (const a of own) {
        const cidr = `${a.address}/${a.prefixLength}`;
        if (have.has(cidr)) continue;
        const v6 = a.address.includes(':');
        await run('ip', [...(v6 ? ['-6'] : []), 'addr', 'replace', cidr, 'dev', link.ifname, ...(v6 ? ['nodad'] : [])], { netns });
        if (a.gateway) await run('ip', [...(v6 ? ['-6'] : []), 'route', 'replace', 'default', 'via', a.gateway, 'dev', link.ifname], { netns });
        changed = true;
      }
      places.push({ instanceId: instance.id, nicId: nic.id, hostInterface: host.ifname });
    }
    return { changed, places };
  }

  /** Veths of ours whose NIC is no longer desired, and bridges of ours left without ports. */
  private async removeStaleLinks(desired: DesiredState, ctx: DriverContext): Promise<boolean> {
    const wanted = new Set(desired.instances.flatMap((i) => i.nics.map((_, index) => hostVethName(i.id, index))));
    let changed = false;
    const hostLinks = await links(this.host);
    for (const link of hostLinks) {
      if (!link.ifname.startsWith(VETH_PREFIX) || link.ifname.length !== 14 || wanted.has(link.ifname)) continue;
      ctx.logger.info('removing a veth no desired NIC uses', { iface: link.ifname });
      await removeShaping(link.ifname, this.host);
      await deleteLink(this.host, link.ifname);
      changed = true;
    }
    const remaining = await links(this.host);
    for (const bridge of remaining.filter((l) => l.ifalias === BRIDGE_ALIAS && l.linkinfo?.info_kind === 'bridge')) {
      if (remaining.some((l) => (l as Link & { master?: string }).master === bridge.ifname)) continue;
      await deleteLink(this.host, bridge.ifname);
      changed = true;
    }
    return changed;
  }
}

/** The namespace of an instance (its external id, else its name); undefined for `if:` instances. */
function instanceNetns(instance: Instance): string | undefined {
  const id = instance.externalId ?? instance.name;
  return id.startsWith('if:') ? undefined : id;
}
