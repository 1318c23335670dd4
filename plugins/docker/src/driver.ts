/**
 * The Docker driver. Instances are containers, found by `externalId` (container id, short id or
 * name; the instance's name when it has none). NICs are the container's Docker network
 * connections: a desired NIC on a network the container is not on is connected through the Engine
 * API with the NIC's address (the network is created as a bridge with the NIC's subnet when it does
 * not exist); connections the plugin made carry an endpoint alias naming the NIC, so they are
 * disconnected again when the NIC is no longer desired. NAT, firewall and counters go through the
 * nftables dataplane (keyed on the desired addresses), shaping through tc on each NIC's host-side
 * veth, which is looked up again on every call: a restarted container has new veths.
 */
import {
  DataplaneDriver,
  dataplaneCapabilities,
  hostPeer,
  linkCidrs,
  listLinks,
  removeOrphanIfbs,
  removeShaping,
  setAlias,
  type HostSide,
  type Link,
  type NicPlacement,
  type ShapingSpec,
} from '@gatehouse/dataplane';
import {
  ConflictError,
  DriverConfigError,
  TransientError,
  run,
  toDriverError,
  type DesiredInstance,
  type DesiredNic,
  type DesiredPortForward,
  type DesiredState,
  type DiscoveredInstance,
  type DriverContext,
  type DriverError,
} from '@gatehouse/sdk';
import type { DockerDriverConfig } from './config.js';
import { DockerEngine, type ContainerInspect } from './engine.js';
import { ipv4InSubnet, ipv4Subnet } from './ipv4.js';
import { aliasInstanceTag, containerLinks, endpointAlias, tag, vethAlias, vethAliasInstanceTag } from './links.js';

/** Label on Docker networks this plugin created (removed again when no container uses them). */
export const MANAGED_LABEL = 'io.gatehouse.managed';

/**
 * What the plugin does. IPv6 is off: the dataplane could carry it, but this plugin creates IPv4
 * networks only and is tested with IPv4 only. NIC names and MACs of connected NICs are Docker's
 * (Engine API 1.41 cannot set either on a connection); the addresses are the desired ones.
 */
export const CAPABILITIES = dataplaneCapabilities({ ipv6: false, nics: { max: 16 } });

/** Where a desired NIC is on this host right now. */
interface NicPlace extends NicPlacement {
  containerId: string;
  /** The host-side veth as listed (its alias tells whether it is marked as ours). */
  link: Link;
}

/** The driver: containers' NICs are Docker network connections; the rest is the dataplane base's. */
export class DockerDriver extends DataplaneDriver<NicPlace> {
  readonly id = 'docker';
  readonly capabilities = CAPABILITIES;
  readonly engine: DockerEngine;
  private warnedForwardPolicy = false;

  constructor(readonly config: DockerDriverConfig) {
    super(config.hostNetns ? { netns: config.hostNetns } : {});
    this.engine = new DockerEngine(config.socketPath);
  }

  /** Every container, running or not, with the NICs of its networks. Read-only. */
  async discover(): Promise<{ instances: DiscoveredInstance[] }> {
    const host = await listLinks(this.host);
    const instances: DiscoveredInstance[] = [];
    for (const c of await this.engine.containers()) {
      const inside = c.State.Running && c.State.Pid > 0 ? await containerLinks(c.State.Pid) : [];
      const nics = Object.entries(c.NetworkSettings.Networks ?? {}).map(([network, ep]) => {
        const link = ep.MacAddress ? inside.find((l) => l.address === ep.MacAddress.toLowerCase()) : undefined;
        const addresses = link
          ? linkCidrs(link)
          : [
              ...(ep.IPAddress ? [`${ep.IPAddress}/${ep.IPPrefixLen}`] : []),
              ...(ep.GlobalIPv6Address ? [`${ep.GlobalIPv6Address}/${ep.GlobalIPv6PrefixLen}`] : []),
            ];
        const peer = link && hostPeer(link, host);
        // a stopped container has no interfaces: its NIC is named after its network
        return { name: link?.ifname ?? network, mac: ep.MacAddress, addresses, ...(peer ? { hostInterface: peer.ifname } : {}) };
      });
      instances.push({ externalId: c.Id, name: c.Name.replace(/^\//, ''), running: c.State.Running, nics });
    }
    return { instances };
  }

  /**
   * How the host differs from the last apply: the table, NICs that moved to other veths (a
   * restarted container, a restarted dockerd) or appeared, and each NIC's shaping.
   */
  async drift(ctx: DriverContext, input: { desired: DesiredState; thorough: boolean }): Promise<{ differences: string[] }> {
    return this.driftSinceApply(ctx, input);
  }

  /**
   * Connects each container to its NICs' networks. Docker unreachable: the nftables part needs no
   * Docker, so it is applied all the same, and every object of every instance fails with the error
   * until dockerd answers again.
   */
  protected async placeNics(ctx: DriverContext, desired: DesiredState): Promise<HostSide<NicPlace>> {
    const side: HostSide<NicPlace> = { changed: false, places: [], instanceErrors: new Map(), nicErrors: new Map() };
    const containers = new Map<string, ContainerInspect>();
    try {
      await this.engine.ping();
    } catch (err) {
      for (const instance of desired.instances) side.instanceErrors.set(instance.id, toDriverError(err));
      return side;
    }
    for (const [index, instance] of desired.instances.entries()) {
      try {
        let container = await this.findContainer(instance);
        let connected = false;
        for (const [n, nic] of instance.nics.entries()) {
          try {
            connected = (await this.ensureNic(instance, nic, container, `input.desired.instances[${index}].nics[${n}]`)) || connected;
          } catch (err) {
            side.nicErrors.set(nic.id, toDriverError(err));
          }
        }
        if (connected) container = await this.findContainer(instance); // see the new connections
        side.changed ||= connected;
        containers.set(instance.id, container);
      } catch (err) {
        side.instanceErrors.set(instance.id, toDriverError(err));
      }
    }
    try {
      side.changed = (await this.removeStaleConnections(ctx, desired, containers)) || side.changed;
    } catch (err) {
      ctx.logger.warn('could not remove stale Docker network connections', { error: toDriverError(err).message });
    }
    const host = await listLinks(this.host);
    for (const instance of desired.instances) {
      const container = containers.get(instance.id);
      if (!container) continue;
      const places = await this.locate(instance, container, host);
      side.places.push(...places);
      for (const nic of instance.nics) {
        if (side.nicErrors.has(nic.id) || places.some((p) => p.nicId === nic.id)) continue;
        side.nicErrors.set(
          nic.id,
          new TransientError(`instance ${instance.name}: container ${container.Name} is not running, or has no interface on network ${nic.network}`),
        );
      }
    }
    return side;
  }

  /** Where each desired NIC is now, without changing anything (absent containers have none). */
  protected async locateNics(_ctx: DriverContext, desired: DesiredState): Promise<NicPlace[]> {
    const host = await listLinks(this.host);
    const places: NicPlace[] = [];
    for (const instance of desired.instances) {
      const container = await this.engine.container(instance.externalId ?? instance.name);
      if (container) places.push(...(await this.locate(instance, container, host)));
    }
    return places;
  }

  /** The instance's network connections and veth shaping (found by their marks). */
  protected override async releaseHost(_ctx: DriverContext, instanceId: string): Promise<boolean> {
    const mine = tag(instanceId);
    return (await this.removeMarked((t) => t === mine)).length > 0;
  }

  /** Connections and veth shaping marked for instances not in `validInstanceIds`. */
  protected override async gcHost(_ctx: DriverContext, validInstanceIds: readonly string[]): Promise<string[]> {
    const valid = new Set(validInstanceIds.map(tag));
    return this.removeMarked((t) => !valid.has(t));
  }

  /** IPv4 routing (dockerd switches it on too, unless started with --ip-forward=false), and a word on Docker's FORWARD policy. */
  protected override async prepareHost(ctx: DriverContext, desired: DesiredState): Promise<void> {
    await super.prepareHost(ctx, desired);
    await this.warnAboutForwardPolicy(ctx);
  }

  /** A forward needs a running NIC with its target address; a firewall rule, any NIC of the container here. */
  protected override unreachable(instance: DesiredInstance, placed: readonly NicPlace[], forward?: DesiredPortForward): DriverError | undefined {
    if (forward) {
      const addresses = new Set(instance.nics.filter((n) => placed.some((p) => p.nicId === n.id)).flatMap((n) => n.addresses.map((a) => a.address)));
      if (addresses.has(forward.targetAddress)) return undefined;
      return new TransientError(`instance ${instance.name}: no running NIC has the forward's target ${forward.targetAddress}`);
    }
    if (placed.length > 0 || instance.nics.length === 0) return undefined;
    return new TransientError(`instance ${instance.name}: no NIC of its container is on this host`);
  }

  /** Shapes the veth and marks it as ours, so release and gc find it without memory (after an agent restart). */
  protected override async shapeNic(place: NicPlace, spec: ShapingSpec | null): Promise<boolean> {
    const shaped = await super.shapeNic(place, spec);
    return (await setAlias(this.host, place.link, vethAlias(place.instanceId, place.nicId))) || shaped;
  }

  /**
   * Veths of ours that should carry no shaping any more (a removed limit, a removed instance);
   * those of instances whose container could not be looked up (dockerd away, with live-restore
   * keeping the containers running) stay as they are. Then ifb devices whose veth is gone.
   */
  protected override async clearShaping(_ctx: DriverContext, desired: DesiredState, side: HostSide<NicPlace>, shaped: ReadonlySet<string>): Promise<boolean> {
    const unknown = new Set(desired.instances.filter((i) => side.instanceErrors.has(i.id)).map((i) => tag(i.id)));
    let changed = false;
    const host = await listLinks(this.host);
    for (const link of host) {
      const mark = vethAliasInstanceTag(link.ifalias);
      if (shaped.has(link.ifname) || !mark || unknown.has(mark)) continue;
      await removeShaping(link.ifname, this.host);
      await setAlias(this.host, link, '');
      changed = true;
    }
    return (await removeOrphanIfbs(this.host, host)) || changed;
  }

  /**
   * Removes the network connections and veth shaping marked as ours whose instance tag `matches`,
   * then managed networks nothing uses; returns what went (in words, for gc's answer).
   */
  private async removeMarked(matches: (instanceTag: string) => boolean): Promise<string[]> {
    const removed: string[] = [];
    const containers = await this.engine.containers();
    for (const c of containers) {
      for (const [network, ep] of Object.entries(c.NetworkSettings.Networks ?? {})) {
        const mark = (ep.Aliases ?? []).map(aliasInstanceTag).find((t) => t !== undefined);
        if (!mark || !matches(mark)) continue;
        await this.engine.disconnect(network, c.Id);
        delete c.NetworkSettings.Networks![network];
        removed.push(`(connection of ${c.Name.replace(/^\//, '')} to ${network})`);
      }
    }
    await this.removeUnusedNetworks(containers, new Set());
    const host = await listLinks(this.host);
    for (const link of host) {
      const mark = vethAliasInstanceTag(link.ifalias);
      if (!mark || !matches(mark)) continue;
      await removeShaping(link.ifname, this.host);
      await setAlias(this.host, link, '');
      removed.push(`(shaping of ${link.ifname})`);
    }
    await removeOrphanIfbs(this.host, await listLinks(this.host));
    return removed;
  }

  /** The container of an instance: by external id (Docker accepts ids, short ids and names), else by the instance's name. */
  private async findContainer(instance: DesiredInstance): Promise<ContainerInspect> {
    const ref = instance.externalId ?? instance.name;
    const container = await this.engine.container(ref);
    if (!container) throw new TransientError(`instance ${instance.name}: no container ${ref} on this Docker host (deleted?)`);
    return container;
  }

  /**
   * Makes the container have the NIC: already connected to its network with its address, or
   * connected now (the network created when missing). Nothing is left half-done: a network created
   * for a connection that then fails is removed again. Returns whether anything changed.
   */
  private async ensureNic(instance: DesiredInstance, nic: DesiredNic, container: ContainerInspect, path: string): Promise<boolean> {
    const v4 = nic.addresses.find((a) => !a.delegated && !a.address.includes(':'));
    const v6 = nic.addresses.find((a) => !a.delegated && a.address.includes(':'));
    const alias = endpointAlias(instance.id, nic.id);
    const name = container.Name.replace(/^\//, '');
    const endpoint = container.NetworkSettings.Networks?.[nic.network];
    const request = { ...(v4 ? { IPv4Address: v4.address } : {}), ...(v6 ? { IPv6Address: v6.address } : {}), aliases: [alias] };
    if (endpoint) {
      const addressed = (!v4 || endpoint.IPAddress === v4.address) && (!v6 || endpoint.GlobalIPv6Address === v6.address);
      if (addressed) return false;
      // a connection Docker made (the container's own network) is reported as it is, never re-addressed
      if (!(endpoint.Aliases ?? []).includes(alias))
        throw new ConflictError(
          `Failed applying NIC ${nic.name} of instance ${instance.name}: container ${name} is on Docker network ${nic.network} with address ${endpoint.IPAddress || 'none'}, not ${v4?.address ?? v6?.address}, and Gatehouse did not make that connection`,
        );
      await this.engine.disconnect(nic.network, container.Id);
      await this.engine.connect(nic.network, container.Id, request);
      return true;
    }
    let created = false;
    const network = await this.engine.network(nic.network);
    if (!network) {
      if (!v4) throw new DriverConfigError(`${path}.addresses`, nic.addresses, `has no IPv4 address to create Docker network ${nic.network} with`);
      // Docker refuses (ConflictError) a subnet overlapping another network's: nothing was created then
      await this.engine.createNetwork(nic.network, ipv4Subnet(v4.address, v4.prefixLength), v4.gateway, { [MANAGED_LABEL]: 'true' });
      created = true;
    } else if (v4) {
      const subnets = (network.IPAM.Config ?? []).map((c) => c.Subnet ?? '').filter((s) => s !== '' && !s.includes(':'));
      if (!subnets.some((s) => ipv4InSubnet(v4.address, s)))
        throw new ConflictError(
          `Failed applying NIC ${nic.name} of instance ${instance.name}: Docker network ${nic.network} has subnet ${subnets.join(', ') || 'none'}, which does not hold ${v4.address}`,
        );
    }
    try {
      await this.engine.connect(nic.network, container.Id, request);
    } catch (err) {
      if (created) await this.engine.removeNetwork(nic.network).catch(() => undefined);
      throw err;
    }
    return true;
  }

  /**
   * Disconnects connections of ours that no desired NIC wants (its NIC or instance went), and removes
   * managed networks nothing uses. Connections of desired instances that could not be resolved stay:
   * their containers are not known.
   */
  private async removeStaleConnections(ctx: DriverContext, desired: DesiredState, resolved: ReadonlyMap<string, ContainerInspect>): Promise<boolean> {
    const desiredTags = new Set(desired.instances.map((i) => tag(i.id)));
    const unresolved = new Set(desired.instances.filter((i) => !resolved.has(i.id)).map((i) => tag(i.id)));
    const wanted = new Set(
      desired.instances.flatMap((i) => {
        const container = resolved.get(i.id);
        return container ? i.nics.map((n) => `${container.Id} ${n.network} ${endpointAlias(i.id, n.id)}`) : [];
      }),
    );
    const containers = await this.engine.containers();
    let changed = false;
    for (const c of containers) {
      for (const [network, ep] of Object.entries(c.NetworkSettings.Networks ?? {})) {
        const alias = (ep.Aliases ?? []).find((a) => aliasInstanceTag(a) !== undefined);
        if (!alias) continue;
        const mark = aliasInstanceTag(alias)!;
        if (unresolved.has(mark) || (desiredTags.has(mark) && wanted.has(`${c.Id} ${network} ${alias}`))) continue;
        ctx.logger.info('disconnecting a container from a network no desired NIC uses', { container: c.Name, network });
        await this.engine.disconnect(network, c.Id);
        delete c.NetworkSettings.Networks![network];
        changed = true;
      }
    }
    return (await this.removeUnusedNetworks(containers, new Set(desired.instances.flatMap((i) => i.nics.map((n) => n.network))))) || changed;
  }

  /** Removes networks this plugin created that no container is connected to and no desired NIC names. */
  private async removeUnusedNetworks(containers: ContainerInspect[], keep: Set<string>): Promise<boolean> {
    const used = new Set(containers.flatMap((c) => Object.values(c.NetworkSettings.Networks ?? {}).map((ep) => ep.NetworkID)));
    let changed = false;
    for (const network of await this.engine.networks()) {
      if (network.Labels?.[MANAGED_LABEL] !== 'true' || keep.has(network.Name) || used.has(network.Id)) continue;
      await this.engine.removeNetwork(network.Id);
      changed = true;
    }
    return changed;
  }

  /** Where each NIC of a container is: its interface (by the endpoint's MAC) and that interface's host-side veth. */
  private async locate(instance: DesiredInstance, container: ContainerInspect, host: readonly Link[]): Promise<NicPlace[]> {
    if (!container.State.Running || container.State.Pid <= 0) return [];
    const inside = await containerLinks(container.State.Pid);
    const places: NicPlace[] = [];
    for (const nic of instance.nics) {
      const mac = container.NetworkSettings.Networks?.[nic.network]?.MacAddress?.toLowerCase();
      const link = mac ? inside.find((l) => l.address === mac) : undefined;
      const peer = link && hostPeer(link, host);
      if (peer) places.push({ instanceId: instance.id, nicId: nic.id, containerId: container.Id, hostInterface: peer.ifname, link: peer });
    }
    return places;
  }

  /**
   * Docker sets iptables' FORWARD policy to DROP when it is the one switching IPv4 forwarding on;
   * that drops forwarded connections to containers that Docker did not publish — ours included —
   * and an nftables accept of ours cannot override another table's drop. The plugin leaves
   * Docker's rules alone and says so once (see the README for the one-line fix).
   */
  private async warnAboutForwardPolicy(ctx: DriverContext): Promise<void> {
    if (this.warnedForwardPolicy) return;
    try {
      const out = JSON.parse(await run('nft', ['-j', 'list', 'chain', 'ip', 'filter', 'FORWARD'], this.host)) as {
        nftables: { chain?: { policy?: string } }[];
      };
      if (out.nftables.some((o) => o.chain?.policy === 'drop')) {
        this.warnedForwardPolicy = true;
        ctx.logger.warn(
          "iptables' FORWARD policy is DROP (set by Docker): forwards to containers are dropped unless DOCKER-USER accepts them; see plugins/docker/README.md",
        );
      }
    } catch {
      // no such chain: nothing in the way
    }
  }
}
