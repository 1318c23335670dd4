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
import { Dataplane, applyShaping, dataplaneStats, observeShaping, type Link, removeShaping, shapingDifferences, shapingFor } from '@gatehouse/dataplane';
import {
  ConflictError,
  DRIVER_API_VERSION,
  DriverConfigError,
  HostUnreachableError,
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
  type DriverError,
  type ExecTarget,
  type NetworkDriver,
  type ObjectResult,
  type ObservedState,
  type StatsResult,
} from '@gatehouse/sdk';
import type { DockerDriverConfig } from './config.js';
import { DockerEngine, type ContainerInspect } from './engine.js';
import { ipv4InSubnet, ipv4Subnet } from './ipv4.js';
import {
  aliasInstanceTag,
  cidrs,
  containerLinks,
  endpointAlias,
  hostLinks,
  hostPeer,
  removeOrphanIfbs,
  setAlias,
  tag,
  vethAlias,
  vethAliasInstanceTag,
} from './links.js';

/** Label on Docker networks this plugin created (removed again when no container uses them). */
export const MANAGED_LABEL = 'io.gatehouse.managed';

/**
 * What the plugin does. IPv6 is off: the dataplane could carry it, but this plugin creates IPv4
 * networks only and is tested with IPv4 only. NIC names and MACs of connected NICs are Docker's
 * (Engine API 1.41 cannot set either on a connection); the addresses are the desired ones.
 */
export const CAPABILITIES: DriverCapabilities = {
  portForwards: { implementation: 'dataplane', protocols: ['tcp', 'udp'], portRanges: true, ipv6: false, sourceAllowLists: true },
  firewall: {
    implementation: 'dataplane',
    directions: ['inbound', 'outbound'],
    actions: ['allow', 'reject', 'drop'],
    priorities: true,
    ipv6: false,
    icmp: true,
  },
  shaping: { implementation: 'dataplane', ingress: true, egress: true, burst: true },
  nics: { max: 16, hotplug: true, staticAddressing: true },
};

type Instance = DesiredState['instances'][number];
type Nic = Instance['nics'][number];

/** Where a desired NIC is on this host right now. */
interface NicPlace {
  instanceId: string;
  nicId: string;
  containerId: string;
  hostInterface: string;
  /** The host-side veth as listed (its alias tells whether it is marked as ours). */
  link: Link;
}

/** One desired instance matched to its container (or why it could not be). */
interface Resolution {
  instance: Instance;
  container?: ContainerInspect;
  /** Fails all of the instance's objects. */
  error?: DriverError;
  /** Fails single NICs (a conflicting network, a refused connection). */
  nicErrors: Map<string, DriverError>;
}

export class DockerDriver implements NetworkDriver {
  readonly id = 'docker';
  readonly apiVersion = DRIVER_API_VERSION;
  readonly capabilities = CAPABILITIES;
  readonly engine: DockerEngine;
  private readonly host: ExecTarget;
  private readonly dataplane: Dataplane;
  /** Where the NICs were at the last apply, so drift can tell that a container got new veths. */
  private lastPlaces: NicPlace[] = [];
  private warnedForwardPolicy = false;

  constructor(readonly config: DockerDriverConfig) {
    this.engine = new DockerEngine(config.socketPath);
    this.host = config.hostNetns ? { netns: config.hostNetns } : {};
    this.dataplane = new Dataplane(this.host);
  }

  /** Every container, running or not, with the NICs of its networks. Read-only. */
  async discover(): Promise<{ instances: DiscoveredInstance[] }> {
    const host = await hostLinks(this.host);
    const instances: DiscoveredInstance[] = [];
    for (const c of await this.engine.containers()) {
      const inside = c.State.Running && c.State.Pid > 0 ? await containerLinks(c.State.Pid) : [];
      const nics = Object.entries(c.NetworkSettings.Networks ?? {}).map(([network, ep]) => {
        const link = ep.MacAddress ? inside.find((l) => l.address === ep.MacAddress.toLowerCase()) : undefined;
        const addresses = link
          ? cidrs(link)
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

  async apply(ctx: DriverContext, input: { desired: DesiredState; repair?: boolean }): Promise<ApplyResult> {
    const desired = validateDesiredState(input.desired, 'input.desired');
    let changed = false;
    const resolutions: Resolution[] = desired.instances.map((instance) => ({ instance, nicErrors: new Map() }));
    let reachable = true;
    try {
      await this.engine.ping();
    } catch (err) {
      // the nftables part needs no Docker: it is applied all the same, and every object of every
      // instance fails with the error until dockerd answers again
      reachable = false;
      for (const r of resolutions) r.error = toDriverError(err);
    }
    if (reachable) {
      for (const [index, r] of resolutions.entries()) {
        try {
          r.container = await this.findContainer(r.instance);
          for (const [n, nic] of r.instance.nics.entries()) {
            try {
              changed = (await this.ensureNic(r.instance, nic, r.container, `input.desired.instances[${index}].nics[${n}]`)) || changed;
            } catch (err) {
              r.nicErrors.set(nic.id, toDriverError(err));
            }
          }
          if (changed) r.container = await this.findContainer(r.instance); // see the new connections
        } catch (err) {
          r.error = toDriverError(err);
        }
      }
      try {
        changed = (await this.removeStaleConnections(ctx, desired, resolutions)) || changed;
      } catch (err) {
        ctx.logger.warn('could not remove stale Docker network connections', { error: toDriverError(err).message });
      }
    }

    let host = await hostLinks(this.host);
    const places: NicPlace[] = [];
    for (const r of resolutions) if (r.container && !r.error) places.push(...(await this.locate(r.instance, r.container, host)));

    const results: ObjectResult[] = [];
    const failed = (objectType: ObjectResult['objectType'], objectId: string, error: DriverError): ObjectResult => ({
      objectType,
      objectId,
      status: 'failed',
      error: error.toJSON(),
    });
    const applied = (objectType: ObjectResult['objectType'], objectId: string): ObjectResult => ({ objectType, objectId, status: 'applied' });
    for (const r of resolutions) {
      for (const nic of r.instance.nics) {
        const error =
          r.error ??
          r.nicErrors.get(nic.id) ??
          (places.some((p) => p.nicId === nic.id)
            ? undefined
            : new TransientError(
                `instance ${r.instance.name}: container ${r.container?.Name ?? '?'} is not running, or has no interface on network ${nic.network}`,
              ));
        results.push(error ? failed('nic', nic.id, error) : applied('nic', nic.id));
      }
    }

    if (desired.instances.length > 0) {
      await this.enableForwarding();
      await this.warnAboutForwardPolicy(ctx);
    }
    try {
      changed = (await this.dataplane.apply(desired, { force: input.repair ?? false })).changed || changed;
      for (const r of resolutions) {
        const placed = places.filter((p) => p.instanceId === r.instance.id);
        const addresses = new Set(r.instance.nics.filter((n) => placed.some((p) => p.nicId === n.id)).flatMap((n) => n.addresses.map((a) => a.address)));
        // installed either way, but a container that is not here cannot be reached through them
        const absent = r.error ?? new TransientError(`instance ${r.instance.name}: no NIC of its container is on this host`);
        for (const f of r.instance.portForwards) {
          const error =
            r.error ??
            (addresses.has(f.targetAddress)
              ? undefined
              : new TransientError(`instance ${r.instance.name}: no running NIC has the forward's target ${f.targetAddress}`));
          results.push(error ? failed('port_forward', f.id, error) : applied('port_forward', f.id));
        }
        for (const rule of r.instance.firewall.rules) {
          const ok = !r.error && (placed.length > 0 || r.instance.nics.length === 0);
          results.push(ok ? applied('firewall_rule', rule.id) : failed('firewall_rule', rule.id, absent));
        }
      }
    } catch (err) {
      const error = toDriverError(err);
      ctx.logger.error('nftables transaction failed; the previous ruleset stays', { error: error.message });
      for (const r of resolutions) {
        for (const f of r.instance.portForwards) results.push(failed('port_forward', f.id, error));
        for (const rule of r.instance.firewall.rules) results.push(failed('firewall_rule', rule.id, error));
      }
    }

    // shaping on the host side of each NIC; the veth is marked as ours so release and gc find it
    // without memory (after an agent restart)
    const shaped = new Set<string>();
    for (const r of resolutions) {
      for (const limit of r.instance.bandwidth) {
        const targets = places.filter((p) => p.instanceId === r.instance.id && (limit.nicId === null || p.nicId === limit.nicId));
        try {
          if (r.error) throw r.error;
          if (targets.length === 0) throw new TransientError(`instance ${r.instance.name} has no running NIC on this host to shape`);
          for (const place of targets) {
            const spec = shapingFor(r.instance, place.nicId);
            changed = (await applyShaping({ iface: place.hostInterface, spec }, this.host)).changed || changed;
            changed = (await setAlias(this.host, place.link, vethAlias(place.instanceId, place.nicId))) || changed;
            shaped.add(place.hostInterface);
          }
          results.push(applied('bandwidth_limit', limit.id));
        } catch (err) {
          results.push(failed('bandwidth_limit', limit.id, toDriverError(err)));
        }
      }
    }
    // veths of ours that should carry no shaping any more (a removed limit, a removed instance);
    // those of instances whose container could not be looked up (dockerd away, with live-restore
    // keeping the containers running) stay as they are
    const unknown = new Set(resolutions.filter((r) => r.error).map((r) => tag(r.instance.id)));
    host = await hostLinks(this.host);
    for (const link of host) {
      const mark = vethAliasInstanceTag(link.ifalias);
      if (shaped.has(link.ifname) || !mark || unknown.has(mark)) continue;
      await removeShaping(link.ifname, this.host);
      await setAlias(this.host, link, '');
      changed = true;
    }
    changed = (await removeOrphanIfbs(this.host, host)) || changed;
    this.lastPlaces = places;
    return { changed, objects: results };
  }

  async observe(_ctx: DriverContext, input: { desired?: DesiredState }): Promise<{ state: ObservedState }> {
    const { forwards, firewalls } = await this.dataplane.observe();
    const shaping = input.desired ? await observeShaping(await this.places(input.desired), this.host) : [];
    return { state: sortObservation({ forwards, firewalls: firewalls.map(({ unrecognized: _, ...f }) => f), shaping }) };
  }

  /**
   * How the host differs from the last apply: the nftables table (map elements only when
   * `thorough`), NICs that moved to other veths (a restarted container, a restarted dockerd) or
   * appeared, and each NIC's shaping. Docker being unreachable is no drift of ours: applies
   * already fail and are retried.
   */
  async drift(_ctx: DriverContext, input: { desired: DesiredState; thorough: boolean }): Promise<{ differences: string[] }> {
    const differences = (await this.dataplane.drift({ elements: input.thorough })) ?? [];
    let live: NicPlace[];
    try {
      live = await this.places(input.desired);
    } catch (err) {
      if (err instanceof HostUnreachableError) return { differences };
      throw err;
    }
    const key = (p: NicPlace) => `${p.nicId} ${p.hostInterface}`;
    const before = new Set(this.lastPlaces.map(key));
    const now = new Set(live.map(key));
    for (const p of this.lastPlaces) if (!now.has(key(p))) differences.push(`NIC ${p.nicId} is no longer on ${p.hostInterface}`);
    for (const p of live) if (!before.has(key(p))) differences.push(`NIC ${p.nicId} is now on ${p.hostInterface}`);
    differences.push(...(await shapingDifferences(live, input.desired, this.host)));
    return { differences };
  }

  async stats(_ctx: DriverContext, input: { desired?: DesiredState }): Promise<StatsResult> {
    return dataplaneStats(this.dataplane, input.desired ? await this.places(input.desired) : [], this.host);
  }

  async release(_ctx: DriverContext, input: { instanceId: string }): Promise<{ released: boolean }> {
    const mine = tag(input.instanceId);
    let released = await this.dataplane.release(input.instanceId);
    released = (await this.removeMarked((t) => t === mine)).length > 0 || released;
    this.lastPlaces = this.lastPlaces.filter((p) => p.instanceId !== input.instanceId);
    return { released };
  }

  async gc(_ctx: DriverContext, input: { validInstanceIds: readonly string[] }): Promise<{ removedInstanceIds: string[] }> {
    const valid = new Set(input.validInstanceIds.map(tag));
    const removed = new Set(await this.dataplane.gc(input.validInstanceIds));
    for (const what of await this.removeMarked((t) => !valid.has(t))) removed.add(what);
    this.lastPlaces = this.lastPlaces.filter((p) => input.validInstanceIds.includes(p.instanceId));
    return { removedInstanceIds: [...removed] };
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
    const host = await hostLinks(this.host);
    for (const link of host) {
      const mark = vethAliasInstanceTag(link.ifalias);
      if (!mark || !matches(mark)) continue;
      await removeShaping(link.ifname, this.host);
      await setAlias(this.host, link, '');
      removed.push(`(shaping of ${link.ifname})`);
    }
    await removeOrphanIfbs(this.host, await hostLinks(this.host));
    return removed;
  }

  /** The container of an instance: by external id (Docker accepts ids, short ids and names), else by the instance's name. */
  private async findContainer(instance: Instance): Promise<ContainerInspect> {
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
  private async ensureNic(instance: Instance, nic: Nic, container: ContainerInspect, path: string): Promise<boolean> {
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
  private async removeStaleConnections(ctx: DriverContext, desired: DesiredState, resolutions: Resolution[]): Promise<boolean> {
    const desiredTags = new Set(desired.instances.map((i) => tag(i.id)));
    const unresolved = new Set(resolutions.filter((r) => !r.container).map((r) => tag(r.instance.id)));
    const wanted = new Set(
      resolutions
        .filter((r) => r.container)
        .flatMap((r) => r.instance.nics.map((n) => `${r.container!.Id} ${n.network} ${endpointAlias(r.instance.id, n.id)}`)),
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
  private async locate(instance: Instance, container: ContainerInspect, host: readonly Link[]): Promise<NicPlace[]> {
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

  /** Where each desired NIC is now, without changing anything (absent containers have none). */
  private async places(desired: DesiredState): Promise<NicPlace[]> {
    const host = await hostLinks(this.host);
    const places: NicPlace[] = [];
    for (const instance of desired.instances) {
      const container = await this.engine.container(instance.externalId ?? instance.name);
      if (container) places.push(...(await this.locate(instance, container, host)));
    }
    return places;
  }

  /** Routing between the public side and the containers (dockerd switches it on too, unless started with --ip-forward=false). */
  private async enableForwarding(): Promise<void> {
    const now = (await run('sysctl', ['-n', 'net.ipv4.ip_forward'], this.host)).trim();
    if (now !== '1') await run('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1'], this.host);
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
