/**
 * The Linux driver: instances are network namespaces on this host (`externalId` is the
 * namespace's name, or `if:NAME` for an instance reached through an existing host interface).
 * NICs are veth pairs — the instance side carries the NIC's name, MAC and addresses, the host side
 * joins the bridge named by the NIC's network (created with the gateway addresses when missing).
 * NAT, firewall and counters go through the nftables dataplane; shaping through tc on the host
 * side of each NIC.
 */
import {
  DriverConfigError,
  TransientError,
  run,
  toDriverError,
  type DesiredInstance,
  type DesiredState,
  type DiscoveredInstance,
  type DriverContext,
  type DriverError,
} from '@gatehouse/sdk';
import {
  DATAPLANE_CAPABILITIES,
  DataplaneDriver,
  deleteLink,
  hostPeer,
  linkCidrs,
  listLinks,
  removeShaping,
  type HostSide,
  type Link,
  type NicPlacement,
} from '@gatehouse/dataplane';
import { BRIDGE_ALIAS, VETH_PREFIX, createVeth, ensureBridge, hostVethName, instanceTag, namespaces } from './links.js';

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

/** Everything the dataplane offers: forwards, firewalls and shaping, IPv4 and IPv6, 32 NICs, hot-plug. */
export const CAPABILITIES = DATAPLANE_CAPABILITIES;

/** The driver: NICs are veth pairs it creates; the rest is the dataplane base's. */
export class LinuxDriver extends DataplaneDriver {
  readonly id = 'linux';
  readonly capabilities = CAPABILITIES;

  constructor(private readonly config: LinuxDriverConfig) {
    // a namespace's NICs stay where they were put: forward-only changes skip the host side
    super(config.hostNetns ? { netns: config.hostNetns } : {}, { reuseHostSide: true });
  }

  async discover(): Promise<{ instances: DiscoveredInstance[] }> {
    const hostLinks = await listLinks(this.host, { missingOk: true });
    const instances: DiscoveredInstance[] = [];
    for (const name of await this.instanceNamespaces()) {
      const nics = (await listLinks({ netns: name }, { missingOk: true }))
        .filter((l) => l.ifname !== 'lo')
        .map((l) => ({ name: l.ifname, mac: l.address ?? '', addresses: linkCidrs(l), hostInterface: hostPeer(l, hostLinks)?.ifname }));
      instances.push({ externalId: name, name, running: true, nics });
    }
    return { instances };
  }

  /** How the table, the veths and their shaping differ from the last apply. */
  async drift(ctx: DriverContext, input: { desired: DesiredState; thorough: boolean }): Promise<{ differences: string[] }> {
    return this.driftSinceApply(ctx, input);
  }

  protected async placeNics(ctx: DriverContext, desired: DesiredState): Promise<HostSide<NicPlacement>> {
    const side: HostSide<NicPlacement> = { changed: false, places: [], instanceErrors: new Map(), nicErrors: new Map() };
    const known = new Set(await namespaces());
    const hostLinks = await listLinks(this.host, { missingOk: true });
    for (const instance of desired.instances) {
      try {
        const out = await this.ensureNics(instance, known, hostLinks);
        side.changed ||= out.changed;
        side.places.push(...out.places);
      } catch (err) {
        // the namespace is away: its NICs fail, its forwards and firewall are installed all the same
        const error: DriverError = toDriverError(err);
        for (const nic of instance.nics) side.nicErrors.set(nic.id, error);
      }
    }
    side.changed = (await this.removeStaleLinks(desired, ctx)) || side.changed;
    return side;
  }

  protected async locateNics(_ctx: DriverContext, desired: DesiredState): Promise<NicPlacement[]> {
    const hostLinks = await listLinks(this.host, { missingOk: true });
    const places: NicPlacement[] = [];
    for (const instance of desired.instances) {
      const netns = instanceNetns(instance);
      const inside = netns ? await listLinks({ netns }, { missingOk: true }) : [];
      instance.nics.forEach((nic) => {
        const inner = inside.find((l) => l.address === nic.mac.toLowerCase());
        const host = netns ? inner && hostPeer(inner, hostLinks) : hostLinks.find((l) => l.ifname === instance.externalId!.slice(3));
        if (host) places.push({ instanceId: instance.id, nicId: nic.id, hostInterface: host.ifname });
      });
    }
    return places;
  }

  /** The instance's veths (and their shaping). */
  protected override async releaseHost(_ctx: DriverContext, instanceId: string): Promise<boolean> {
    const tag = `${VETH_PREFIX}${instanceTag(instanceId)}`;
    return this.removeVeths((ifname) => ifname.startsWith(tag)).then((gone) => gone.length > 0);
  }

  /** Veths of ours whose instance is not valid. */
  protected override async gcHost(_ctx: DriverContext, validInstanceIds: readonly string[]): Promise<string[]> {
    const valid = new Set(validInstanceIds.map((id) => `${VETH_PREFIX}${instanceTag(id)}`));
    const gone = await this.removeVeths((ifname) => isOurVeth(ifname) && !valid.has(ifname.slice(0, 12)));
    return gone.map((ifname) => `(veth ${ifname})`);
  }

  /** Deletes the host's veths whose names match (with their shaping); returns their names. */
  private async removeVeths(matches: (ifname: string) => boolean): Promise<string[]> {
    const gone: string[] = [];
    for (const link of await listLinks(this.host, { missingOk: true })) {
      if (!matches(link.ifname)) continue;
      await removeShaping(link.ifname, this.host);
      await deleteLink(this.host, link.ifname);
      gone.push(link.ifname);
    }
    return gone;
  }

  private async instanceNamespaces(): Promise<string[]> {
    const all = await namespaces();
    return all.filter((n) => n !== this.config.hostNetns && (!this.config.namespacePrefix || n.startsWith(this.config.namespacePrefix)));
  }

  /** Makes every NIC of an instance exist with its addresses; returns where they are. */
  private async ensureNics(instance: DesiredInstance, known: Set<string>, hostLinks: Link[]): Promise<{ changed: boolean; places: NicPlacement[] }> {
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
    const places: NicPlacement[] = [];
    let inside = await listLinks({ netns }, { missingOk: true });
    for (const [index, nic] of instance.nics.entries()) {
      let link = inside.find((l) => l.address === nic.mac.toLowerCase());
      if (!link) {
        const hostName = hostVethName(instance.id, index);
        await deleteLink(this.host, hostName); // a half-made pair from an interrupted apply
        await createVeth(this.host, hostName, netns, nic.name, nic.mac.toLowerCase());
        changed = true;
        inside = await listLinks({ netns }, { missingOk: true });
        hostLinks = await listLinks(this.host, { missingOk: true });
        link = inside.find((l) => l.address === nic.mac.toLowerCase())!;
      }
      const host = hostPeer(link, hostLinks);
      if (!host) throw new TransientError(`instance ${instance.name}: NIC ${link.ifname} has no veth peer on this host`);
      // the host side joins the NIC's network, a bridge holding the gateways
      const own = nic.addresses.filter((a) => !a.delegated);
      const gateways = [...new Set(own.filter((a) => a.gateway).map((a) => `${a.gateway}/${a.prefixLength}`))];
      if (host.ifname.startsWith(VETH_PREFIX)) {
        changed = (await ensureBridge(this.host, nic.network, gateways)) || changed;
        if (host.master !== nic.network) {
          await run('ip', ['link', 'set', host.ifname, 'master', nic.network], this.host);
          changed = true;
        }
      }
      // static addresses inside the instance, and its default routes
      const have = new Set(linkCidrs(link));
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
    const hostLinks = await listLinks(this.host, { missingOk: true });
    for (const link of hostLinks) {
      if (!isOurVeth(link.ifname) || wanted.has(link.ifname)) continue;
      ctx.logger.info('removing a veth no desired NIC uses', { iface: link.ifname });
      await removeShaping(link.ifname, this.host);
      await deleteLink(this.host, link.ifname);
      changed = true;
    }
    const remaining = await listLinks(this.host, { missingOk: true });
    for (const bridge of remaining.filter((l) => l.ifalias === BRIDGE_ALIAS && l.linkinfo?.info_kind === 'bridge')) {
      if (remaining.some((l) => l.master === bridge.ifname)) continue;
      await deleteLink(this.host, bridge.ifname);
      changed = true;
    }
    return changed;
  }
}

/** Whether a host link is a veth this plugin made (`ghv` + 9 hex digits + 2 index digits). */
function isOurVeth(ifname: string): boolean {
  return ifname.startsWith(VETH_PREFIX) && ifname.length === 14;
}

/** The namespace of an instance (its external id, else its name); undefined for `if:` instances. */
function instanceNetns(instance: DesiredInstance): string | undefined {
  const id = instance.externalId ?? instance.name;
  return id.startsWith('if:') ? undefined : id;
}
