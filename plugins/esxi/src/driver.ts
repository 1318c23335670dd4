/**
 * The ESXi driver, on the shared dataplane base. vSphere owns the VMs, their NICs and the
 * standard port groups; the Linux gateway in front of the VMs' private port group (where the
 * agent runs) owns NAT, the firewall and the counters, through the dataplane. So `placeNics`
 * hot-adds (or reconnects, moves, removes) the VMs' NICs with ReconfigVM_Task, and egress
 * shaping is a port group per shaped NIC with a `HostNetworkTrafficShapingPolicy` — on a
 * standard vSwitch that policy shapes only what the VM sends, which is what the capabilities say.
 *
 * What Gatehouse made is marked on the VM (`extraConfig` keys `gatehouse.instance` and
 * `gatehouse.nics`) and in the names of its port groups (`gh-<instance hash>-<NIC hash>`), so
 * release and gc in a fresh process find it, and nothing else is touched.
 */
import { createHash } from 'node:crypto';
import { DataplaneDriver, dataplaneCapabilities, shapingFor, type HostSide, type NicPlacement, type ShapingSpec } from '@gatehouse/dataplane';
import {
  CapabilityNotSupportedError,
  ConflictError,
  HostUnreachableError,
  TransientError,
  sortObservation,
  type DesiredInstance,
  type DesiredNic,
  type DesiredState,
  type DiscoveredInstance,
  type DriverCapabilities,
  type DriverContext,
  type ObservedShaping,
  type ObservedState,
  type StatsResult,
} from '@gatehouse/sdk';
import { endpointOf, nicModelType, type EsxiDriverConfig } from './config.js';
import { NICS_KEY, OWNER_KEY, readVm, readVms, type Vm } from './inventory.js';
import { VsphereClient, toSdkError, type NicChange, type PortGroupSpec } from './vsphere/index.js';

/**
 * Forwards and firewalls by the gateway's dataplane (IPv4 and IPv6, keyed on the VMs' addresses);
 * shaping natively, egress only (a standard vSwitch shapes what VMs send, not what they receive);
 * NICs hot-added by vSphere with Gatehouse's MAC; addresses inside the guest are the guest's own.
 */
export const CAPABILITIES: DriverCapabilities = {
  // ESXi 7/8 allow 10 virtual NICs per VM
  ...dataplaneCapabilities({ nics: { max: 10, hotplug: true, staticAddressing: false } }),
  shaping: { implementation: 'native', ingress: false, egress: true, burst: true },
};

/** Port groups Gatehouse makes start with this. */
export const PORT_GROUP_PREFIX = 'gh-';

/** Where a desired NIC is: on its VM, on a port group (`hostInterface` is that port group's name). */
interface EsxiPlace extends NicPlacement {
  portGroup: string;
}

/** The standard port group of a shaped NIC. */
export function shapedPortGroup(instanceId: string, nicId: string): string {
  return `${instancePortGroupPrefix(instanceId)}${hash(nicId)}`;
}

function instancePortGroupPrefix(instanceId: string): string {
  return `${PORT_GROUP_PREFIX}${hash(instanceId)}-`;
}

function hash(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 10);
}

/** A port group's shaping policy for an egress limit: average = peak = the rate, burst the limit's or 100 ms of it. */
function policyFor(spec: ShapingSpec): PortGroupSpec['shaping'] {
  const bps = spec.egressBps!;
  return { enabled: true, averageBandwidth: bps, peakBandwidth: bps, burstSize: spec.egressBurstBytes ?? Math.max(Math.ceil(bps / 80), 15_000) };
}

/** The driver. */
export class EsxiDriver extends DataplaneDriver<EsxiPlace> {
  readonly id = 'esxi';
  readonly capabilities = CAPABILITIES;
  private readonly client: VsphereClient;
  /** The last applied desired state, for the addresses of VMs whose Tools report none. */
  private lastDesired: DesiredState | undefined;

  constructor(private readonly config: EsxiDriverConfig) {
    // nicStats reads the gateway's per-instance counters
    super(config.hostNetns ? { netns: config.hostNetns } : {}, { instanceCounters: true });
    this.client = new VsphereClient(endpointOf(config));
  }

  /** VMs with their Ethernet cards; addresses from VMware Tools (`guest.net`), else the desired ones. */
  async discover(ctx: DriverContext): Promise<{ instances: DiscoveredInstance[] }> {
    const vms = await this.vms(ctx, 'listing VMs');
    const desiredAddresses = new Map<string, string[]>();
    for (const i of this.lastDesired?.instances ?? [])
      for (const n of i.nics)
        desiredAddresses.set(
          n.mac.toLowerCase(),
          n.addresses.map((a) => `${a.address}/${a.prefixLength}`),
        );
    return {
      instances: vms.map((vm) => ({
        externalId: vm.ref.value,
        name: vm.name,
        running: vm.poweredOn,
        nics: vm.nics.map((n) => ({
          name: n.label || `ethernet-${n.key}`,
          mac: n.mac,
          addresses: n.guestAddresses.length ? n.guestAddresses : (desiredAddresses.get(n.mac) ?? []),
        })),
      })),
    };
  }

  /** Forwards and firewalls from the gateway's table; shaping from the port groups of the desired NICs. */
  override async observe(ctx: DriverContext, input: { desired?: DesiredState }): Promise<{ state: ObservedState }> {
    const { state } = await super.observe(ctx, {});
    if (!input.desired) return { state };
    const groups = new Map((await this.portGroups(ctx)).map((p) => [p.name, p]));
    const shaping: ObservedShaping[] = [];
    for (const place of await this.locateNics(ctx, input.desired)) {
      const policy = groups.get(place.portGroup)?.shaping;
      if (place.portGroup.startsWith(PORT_GROUP_PREFIX) && policy?.enabled && policy.averageBandwidth)
        shaping.push({ instanceId: place.instanceId, nicId: place.nicId, ingressBps: null, egressBps: policy.averageBandwidth });
    }
    return { state: sortObservation({ ...state, shaping }) };
  }

  /** Logs out of vSphere and ends the gateway's nft process. */
  override async close(): Promise<void> {
    await this.client.logout().catch(() => undefined);
    await super.close();
  }

  protected async placeNics(ctx: DriverContext, desired: DesiredState): Promise<HostSide<EsxiPlace>> {
    this.lastDesired = desired;
    const side: HostSide<EsxiPlace> = { changed: false, places: [], instanceErrors: new Map(), nicErrors: new Map() };
    let vms: Vm[];
    let groups: PortGroupSpec[];
    try {
      vms = await this.vms(ctx, 'listing VMs');
      groups = await this.portGroups(ctx);
    } catch (err) {
      // vSphere away: the gateway's table is still applied; every instance's NICs wait for it
      for (const instance of desired.instances) side.instanceErrors.set(instance.id, toSdkError(err, 'reading the ESXi inventory'));
      return side;
    }
    const wantedGroups = new Set<string>();
    for (const instance of desired.instances) {
      const vm = findVm(vms, instance);
      if (!vm) {
        side.instanceErrors.set(
          instance.id,
          new TransientError(`instance ${instance.name}: no VM ${instance.externalId ?? instance.name} on the ESXi host (deleted, or not created yet)`),
        );
        continue;
      }
      for (const nic of instance.nics) if (shapingFor(instance, nic.id)?.egressBps) wantedGroups.add(shapedPortGroup(instance.id, nic.id));
      try {
        side.changed = (await this.ensureVm(ctx, instance, vm, groups, side)) || side.changed;
      } catch (err) {
        const error = toSdkError(err, `configuring the NICs of VM ${vm.name}`);
        if (error instanceof HostUnreachableError) side.instanceErrors.set(instance.id, error);
        else for (const nic of instance.nics) if (!side.nicErrors.has(nic.id)) side.nicErrors.set(nic.id, error);
      }
    }
    try {
      // VMs no longer desired (or now another instance's) give back what Gatehouse added
      const wanted = new Map(desired.instances.map((i) => [findVm(vms, i)?.ref.value, i.id]));
      for (const vm of vms) {
        if (vm.owner === undefined || wanted.get(vm.ref.value) === vm.owner) continue;
        await this.disown(ctx, vm);
        side.changed = true;
      }
      side.changed = (await this.removePortGroups(ctx, (name) => !wantedGroups.has(name))) || side.changed;
    } catch (err) {
      ctx.logger.warn('could not take back what Gatehouse made on VMs no longer desired', { error: toSdkError(err, 'cleaning up').message });
    }
    return side;
  }

  protected async locateNics(ctx: DriverContext, desired: DesiredState): Promise<EsxiPlace[]> {
    const vms = await this.vms(ctx, 'listing VMs');
    const places: EsxiPlace[] = [];
    for (const instance of desired.instances) {
      const vm = findVm(vms, instance);
      for (const nic of instance.nics) {
        const card = vm?.nics.find((c) => c.mac === nic.mac.toLowerCase() && c.connected);
        if (card) places.push({ instanceId: instance.id, nicId: nic.id, hostInterface: card.portGroup, portGroup: card.portGroup });
      }
    }
    return places;
  }

  protected override async releaseHost(ctx: DriverContext, instanceId: string): Promise<boolean> {
    const released = await super.releaseHost(ctx, instanceId);
    const prefix = instancePortGroupPrefix(instanceId);
    return (await this.removePortGroups(ctx, (name) => name.startsWith(prefix))) || released;
  }

  protected override async gcHost(ctx: DriverContext, valid: readonly string[]): Promise<string[]> {
    const removed = await super.gcHost(ctx, valid);
    const keepPrefixes = valid.map(instancePortGroupPrefix);
    await this.removePortGroups(ctx, (name) => !keepPrefixes.some((p) => name.startsWith(p)));
    return removed;
  }

  /** Release and gc take back the NICs of the VMs marked for Gatehouse instances (port groups: releaseHost, gcHost). */
  protected override async taggedInstances(ctx: DriverContext) {
    return (await this.vms(ctx, 'listing VMs')).map((vm) => ({ owner: vm.owner, disown: () => this.disown(ctx, vm) }));
  }

  /** Egress shaping is the port group's, set in `placeNics`; ingress cannot be shaped here. */
  protected override async shapeNic(_place: EsxiPlace, spec: ShapingSpec | null): Promise<boolean> {
    if (spec?.ingressBps != null)
      throw new CapabilityNotSupportedError('shaping.ingress', 'a standard vSwitch shapes only what a VM sends: ingress limits are not supported on ESXi');
    return false;
  }

  /** Unshaped NICs are moved off their shaped port groups in `placeNics`. */
  protected override async clearShaping(): Promise<boolean> {
    return false;
  }

  /** The gateway's per-instance counters (traffic through the gateway), on the instance's first NIC that is placed. */
  protected override async nicStats(ctx: DriverContext, desired: DesiredState): Promise<StatsResult['nics']> {
    const counters = (await this.dataplane.counters()).instances;
    const places = await this.locateNics(ctx, desired);
    const nics: StatsResult['nics'] = [];
    for (const [instanceId, c] of counters) {
      const place = places.find((p) => p.instanceId === instanceId);
      if (place) nics.push({ instanceId, nicId: place.nicId, rx: c.in, tx: c.out });
    }
    return nics;
  }

  /** Makes one VM's NICs match the instance's, and its shaped port groups; true when anything changed. */
  private async ensureVm(ctx: DriverContext, instance: DesiredInstance, vm: Vm, groups: PortGroupSpec[], side: HostSide<EsxiPlace>): Promise<boolean> {
    let changed = false;
    const changes: NicChange[] = [];
    const wantedMacs = new Set(instance.nics.map((n) => n.mac.toLowerCase()));
    const placed: { nic: DesiredNic; portGroup: string }[] = [];
    for (const nic of instance.nics) {
      const network = groups.find((g) => g.name === nic.network);
      if (!network) {
        side.nicErrors.set(
          nic.id,
          new ConflictError(`instance ${instance.name}: NIC ${nic.name} wants port group ${nic.network}, which the ESXi host does not have`),
        );
        continue;
      }
      let portGroup = nic.network;
      const spec = shapingFor(instance, nic.id);
      if (spec?.egressBps) {
        portGroup = shapedPortGroup(instance.id, nic.id);
        changed =
          (await this.ensureShapedGroup(
            ctx,
            { name: portGroup, vlanId: network.vlanId, vswitchName: network.vswitchName, shaping: policyFor(spec) },
            groups,
          )) || changed;
      }
      const mac = nic.mac.toLowerCase();
      const card = vm.nics.find((c) => c.mac === mac);
      if (!card) changes.push({ operation: 'add', model: nicModelType(this.config.nicModel), portGroup, mac });
      else if (card.portGroup !== portGroup || !card.connected)
        changes.push({ operation: 'edit', model: card.model, key: card.key, portGroup, mac, connected: true });
      placed.push({ nic, portGroup });
    }
    for (const card of vm.nics)
      if (vm.ownedMacs.includes(card.mac) && !wantedMacs.has(card.mac)) changes.push({ operation: 'remove', model: card.model, key: card.key });
    const owned = [
      ...new Set([...vm.ownedMacs.filter((m) => wantedMacs.has(m)), ...changes.filter((c) => c.operation === 'add').map((c) => (c as { mac: string }).mac)]),
    ].sort();
    const extra: Record<string, string> = {};
    if (vm.owner !== instance.id) extra[OWNER_KEY] = instance.id;
    if (owned.join(',') !== [...vm.ownedMacs].sort().join(',')) extra[NICS_KEY] = owned.join(',');
    if (changes.length > 0 || Object.keys(extra).length > 0) {
      await this.client.reconfigureNics(vm.ref, changes, ctx.signal, extra);
      ctx.logger.info('reconfigured the NICs of a VM', { vm: vm.name, changes: changes.map((c) => c.operation) });
      changed = true;
    }
    for (const { nic, portGroup } of placed) side.places.push({ instanceId: instance.id, nicId: nic.id, hostInterface: portGroup, portGroup });
    return changed;
  }

  /** Creates or updates a shaped port group; true when it changed. */
  private async ensureShapedGroup(ctx: DriverContext, spec: PortGroupSpec, groups: PortGroupSpec[]): Promise<boolean> {
    const now = groups.find((g) => g.name === spec.name);
    if (now && JSON.stringify(now) === JSON.stringify(spec)) return false;
    if (now) await this.client.updatePortGroup(spec, ctx.signal);
    else await this.client.addPortGroup(spec, ctx.signal);
    groups.splice(now ? groups.indexOf(now) : groups.length, now ? 1 : 0, spec);
    ctx.logger.info('set the shaping of a port group', { portGroup: spec.name, averageBps: spec.shaping?.averageBandwidth });
    return true;
  }

  /** Removes Gatehouse's port groups that `unwanted` picks and no VM uses; true when any went. */
  private async removePortGroups(ctx: DriverContext, unwanted: (name: string) => boolean): Promise<boolean> {
    const used = new Set((await this.vms(ctx, 'listing VMs')).flatMap((vm) => vm.nics.map((n) => n.portGroup)));
    let removed = false;
    for (const group of await this.portGroups(ctx)) {
      if (!group.name.startsWith(PORT_GROUP_PREFIX) || !unwanted(group.name) || used.has(group.name)) continue;
      await this.client.removePortGroup(group.name, ctx.signal).catch((err: unknown) => {
        throw toSdkError(err, `removing port group ${group.name}`);
      });
      removed = true;
    }
    return removed;
  }

  /** Removes the NICs Gatehouse added to a VM and its marks (one reconfigure). */
  private async disown(ctx: DriverContext, vm: Vm): Promise<void> {
    const fresh = (await readVm(this.client, vm.ref, ctx.signal).catch(() => undefined)) ?? vm;
    const changes: NicChange[] = fresh.nics.filter((c) => fresh.ownedMacs.includes(c.mac)).map((c) => ({ operation: 'remove', model: c.model, key: c.key }));
    try {
      await this.client.reconfigureNics(fresh.ref, changes, ctx.signal, { [OWNER_KEY]: '', [NICS_KEY]: '' });
    } catch (err) {
      throw toSdkError(err, `removing Gatehouse's NICs from VM ${vm.name}`);
    }
    ctx.logger.info("removed Gatehouse's NICs and marks from a VM", { vm: vm.name, removed: changes.length });
  }

  private async vms(ctx: DriverContext, what: string): Promise<Vm[]> {
    try {
      return await readVms(this.client, ctx.signal);
    } catch (err) {
      throw toSdkError(err, what);
    }
  }

  private async portGroups(ctx: DriverContext): Promise<PortGroupSpec[]> {
    try {
      return await this.client.portGroups(ctx.signal);
    } catch (err) {
      throw toSdkError(err, 'listing port groups');
    }
  }
}

/** The instance's VM: by moref (external id), else by name. */
function findVm(vms: readonly Vm[], instance: DesiredInstance): Vm | undefined {
  return instance.externalId ? vms.find((v) => v.ref.value === instance.externalId) : vms.find((v) => v.name === instance.name);
}
