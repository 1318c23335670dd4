/**
 * The Proxmox VE driver. Instances are QEMU VMs and LXC containers (`externalId`: the VMID, else
 * the guest's name), found cluster-wide through `/cluster/resources`; this agent's dataplane
 * reaches the guests on its own node (`config.node`), whose NICs' host-side devices PVE names
 * `tap<vmid>i<n>` (QEMU) and `veth<vmid>i<n>` (LXC). A desired NIC is a `netN` found by MAC, or
 * hot-plugged through the config call (QEMU's asynchronous one: the task is waited for and its
 * exit status checked), always with the config's `digest` so a concurrent edit is never
 * overwritten (the edit is recomputed on a fresh config and tried again). A NIC PVE cannot
 * hot-plug (its change stays pending) is reported; a failed hot-plug task is reverted, so nothing
 * is left half-applied. NAT, firewall, shaping and counters go through the dataplane base on the
 * node's tap/veth devices (PVE's `rate=` is megabytes per second and symmetric: see README).
 *
 * What is Gatehouse's is found by tags, not memory: the guest carries the tag
 * `gatehouse-<instance id>`, and each NIC Gatehouse added the tag `gatehouse-net<N>`. Release and
 * gc remove those NICs and tags and nothing else.
 */
import {
  ConflictError,
  DriverError,
  TransientError,
  toDriverError,
  type DesiredInstance,
  type DesiredNic,
  type DesiredState,
  type DiscoveredInstance,
  type DriverContext,
} from '@gatehouse/sdk';
import { DataplaneDriver, dataplaneCapabilities, listLinks, removeShaping, type HostSide, type NicPlacement } from '@gatehouse/dataplane';
import type { ProxmoxDriverConfig } from './config.js';
import { isDigestConflict, pveError } from './errors.js';
import { PveClient, PveTaskError, type PveParams } from './pve-client.js';
import { formatLxcNic, formatQemuNic, guestNics, hostDevice, type GuestNic } from './property-string.js';

/**
 * What this driver does: forwards, firewalls and shaping through the dataplane (ingress and egress
 * separately, bursts: PVE's own `rate=` is one symmetric megabytes-per-second cap), NICs
 * hot-plugged (net0…net31). Static addresses are not configured inside QEMU guests (only LXC's
 * `ip=` is PVE's to set), so `staticAddressing` is false.
 */
export const CAPABILITIES = dataplaneCapabilities({ nics: { max: 32, hotplug: true, staticAddressing: false } });

/** Prefix of the tag naming the Gatehouse instance a guest is. */
export const OWNER_TAG = 'gatehouse-';
/** Prefix of the tag marking a `netN` Gatehouse added. */
export const NIC_TAG = 'gatehouse-net';

/** A guest as `/cluster/resources` lists it. */
export interface PveGuest {
  vmid: number;
  type: 'qemu' | 'lxc';
  node: string;
  name: string;
  status: string;
}

/** A guest's config (values as PVE returns them) with its digest. */
type GuestConfig = Record<string, string> & { digest?: string };

/** Where a desired NIC is: its tap/veth, and PVE's own rate on it (shaping by both would fight). */
interface NicPlace extends NicPlacement {
  pveRate?: string;
}

/** The tags of a config (`a;b;c`). */
function tagsOf(config: GuestConfig): string[] {
  return (config.tags ?? '').split(/[;,\s]+/).filter(Boolean);
}

/** The Gatehouse instance id a guest is tagged with. */
function ownerOf(config: GuestConfig): string | undefined {
  return tagsOf(config)
    .find((t) => t.startsWith(OWNER_TAG) && !t.startsWith(NIC_TAG))
    ?.slice(OWNER_TAG.length);
}

/** The `netN` keys Gatehouse added to a guest. */
function ownNicKeys(config: GuestConfig): string[] {
  return tagsOf(config)
    .filter((t) => t.startsWith(NIC_TAG))
    .map((t) => `net${t.slice(NIC_TAG.length)}`);
}

/** The driver: NICs are PVE `netN` devices; the rest is the dataplane base's. */
export class ProxmoxDriver extends DataplaneDriver<NicPlace> {
  readonly id = 'proxmox';
  readonly capabilities = CAPABILITIES;
  readonly client: PveClient;

  constructor(readonly config: ProxmoxDriverConfig) {
    super(config.hostNetns ? { netns: config.hostNetns } : {});
    this.client = new PveClient(config);
  }

  /** Every guest in the cluster with its NICs (MAC, addresses; the tap/veth for those on this node). */
  async discover(ctx: DriverContext): Promise<{ instances: DiscoveredInstance[] }> {
    const instances: DiscoveredInstance[] = [];
    for (const guest of await this.guests(ctx)) {
      const config = await this.readConfig(ctx, guest);
      const live = await this.liveAddresses(ctx, guest, config);
      const running = guest.status === 'running';
      instances.push({
        externalId: String(guest.vmid),
        name: guest.name,
        running,
        nics: guestNics(guest.type, config).map((nic) => ({
          name: live.get(nic.mac)?.name ?? nic.name ?? nic.key,
          mac: nic.mac,
          addresses: live.get(nic.mac)?.addresses ?? configuredAddresses(guest, config, nic),
          ...(running && guest.node === this.config.node ? { hostInterface: hostDevice(guest.type, guest.vmid, nic.index) } : {}),
        })),
      });
    }
    return { instances };
  }

  /**
   * Tags guests and hot-plugs their missing NICs, removing what Gatehouse added that is no longer
   * desired. PVE unreachable: every instance's objects fail with HOST_UNREACHABLE, and the
   * nftables table is still applied (guests keep running while the API is away).
   */
  protected async placeNics(ctx: DriverContext, desired: DesiredState): Promise<HostSide<NicPlace>> {
    const { side, inventory: guests } = await this.readBackend(ctx, desired, 'PVE', {
      read: () => this.guests(ctx),
      removeStale: (inventory) => this.removeStale(ctx, desired, inventory),
    });
    if (!guests) return side;
    const ensured: { instance: DesiredInstance; guest: PveGuest; nicErrors: Map<string, DriverError> }[] = [];
    for (const instance of desired.instances) {
      try {
        const guest = this.guestOf(instance, guests);
        const { changed, nicErrors } = await this.ensureGuest(ctx, instance, guest);
        side.changed ||= changed;
        ensured.push({ instance, guest, nicErrors });
      } catch (err) {
        side.instanceErrors.set(instance.id, pveError(err, `applying instance ${instance.name}`, this.config));
      }
    }
    // the devices after every hot-plug
    const links = new Set((await listLinks(this.host)).map((l) => l.ifname));
    for (const { instance, guest, nicErrors } of ensured) {
      try {
        const config = await this.readConfig(ctx, guest);
        const pending = guest.status === 'running' ? await this.pendingKeys(ctx, guest) : new Set<string>();
        for (const nic of instance.nics) {
          const error = nicErrors.get(nic.id);
          const place = error ? undefined : placeOf(instance, nic, guest, config, links);
          if (place) side.places.push(place);
          else side.nicErrors.set(nic.id, error ?? this.whyNotPlaced(instance, nic, guest, config, pending));
        }
      } catch (err) {
        side.instanceErrors.set(instance.id, pveError(err, `applying instance ${instance.name}`, this.config));
      }
    }
    return side;
  }

  protected async locateNics(ctx: DriverContext, desired: DesiredState): Promise<NicPlace[]> {
    const guests = await this.guests(ctx);
    const links = new Set((await listLinks(this.host)).map((l) => l.ifname));
    const places: NicPlace[] = [];
    for (const instance of desired.instances) {
      let guest: PveGuest;
      try {
        guest = this.guestOf(instance, guests);
      } catch {
        continue;
      }
      const config = await this.readConfig(ctx, guest);
      for (const nic of instance.nics) {
        const place = placeOf(instance, nic, guest, config, links);
        if (place) places.push(place);
      }
    }
    return places;
  }

  /** How the host differs from the last apply (the base's check; PVE unreachable is no drift). */
  async drift(ctx: DriverContext, input: { desired: DesiredState; thorough: boolean }): Promise<{ differences: string[] }> {
    return this.driftSinceApply(ctx, input);
  }

  /** PVE applies its own `rate=` with tc on the same tap: never shape a NIC that has one. */
  protected override checkShapingTargets(instance: DesiredInstance, targets: readonly NicPlace[]): void {
    const shaped = targets.find((p) => p.pveRate !== undefined);
    if (shaped)
      throw new ConflictError(
        `Failed applying bandwidth limit of instance ${instance.name}: its NIC on ${shaped.hostInterface} has PVE's own rate=${shaped.pveRate} (MB/s); remove that or this limit`,
      );
  }

  /** Release and gc take back the NICs Gatehouse added to the guests tagged for Gatehouse instances, their shaping and tags. */
  protected override async taggedInstances(ctx: DriverContext) {
    const tagged = [];
    for (const guest of await this.guests(ctx)) {
      const config = await this.readConfig(ctx, guest);
      tagged.push({ owner: ownerOf(config), disown: () => this.disown(ctx, guest, config, ownNicKeys(config), true) });
    }
    return tagged;
  }

  /** Every guest in the cluster the token may see. */
  private async guests(ctx: DriverContext): Promise<PveGuest[]> {
    try {
      const list = await this.client.get<PveGuest[]>('/cluster/resources', { type: 'vm' }, ctx.signal);
      return list.filter((g) => g.type === 'qemu' || g.type === 'lxc');
    } catch (err) {
      throw pveError(err, 'listing PVE guests', this.config);
    }
  }

  private guestPath(guest: PveGuest): string {
    return `/nodes/${encodeURIComponent(guest.node)}/${guest.type}/${guest.vmid}`;
  }

  private async readConfig(ctx: DriverContext, guest: PveGuest): Promise<GuestConfig> {
    try {
      return await this.client.get<GuestConfig>(`${this.guestPath(guest)}/config`, {}, ctx.signal);
    } catch (err) {
      throw pveError(err, `reading the config of ${guest.type === 'qemu' ? 'VM' : 'CT'} ${guest.vmid}`, this.config);
    }
  }

  /** Keys with a pending change (what PVE could not apply to the running guest yet). */
  private async pendingKeys(ctx: DriverContext, guest: PveGuest): Promise<Set<string>> {
    const pending = await this.client.get<{ key: string; pending?: string; delete?: number }[]>(`${this.guestPath(guest)}/pending`, {}, ctx.signal);
    return new Set(pending.filter((p) => p.pending !== undefined || p.delete).map((p) => p.key));
  }

  /**
   * One config edit with the config's digest: `change` computes the parameters from a fresh
   * config (null: nothing to do). A concurrent edit (digest mismatch) recomputes and tries again,
   * up to three times. QEMU's asynchronous call is waited for; its task's failure is thrown.
   */
  private async edit(ctx: DriverContext, guest: PveGuest, what: string, change: (config: GuestConfig) => PveParams | null): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      const config = await this.readConfig(ctx, guest);
      const params = change(config);
      if (!params) return false;
      try {
        const path = `${this.guestPath(guest)}/config`;
        if (guest.type === 'qemu')
          await this.client.waitTask(await this.client.call<string>('POST', path, { ...params, digest: config.digest }, ctx.signal), ctx.signal);
        else await this.client.call('PUT', path, { ...params, digest: config.digest }, ctx.signal);
        ctx.logger.info('changed a PVE guest config', { vmid: guest.vmid, what });
        return true;
      } catch (err) {
        if (isDigestConflict(err) && attempt < 3) {
          ctx.logger.info('the guest config changed meanwhile; recomputing the edit', { vmid: guest.vmid, what });
          continue;
        }
        throw err;
      }
    }
  }

  /** The guest a desired instance is: by VMID (its external id), else by name. */
  private guestOf(instance: DesiredInstance, guests: readonly PveGuest[]): PveGuest {
    const id = instance.externalId ?? instance.name;
    const guest = /^\d+$/.test(id) ? guests.find((g) => g.vmid === Number(id)) : guests.find((g) => g.name === id);
    if (!guest)
      throw new TransientError(
        `instance ${instance.name}: PVE lists no guest ${id} (deleted, or the token lacks VM.Audit on /vms/${/^\d+$/.test(id) ? id : '<vmid>'})`,
      );
    if (guest.node !== this.config.node)
      throw new TransientError(`instance ${instance.name}: guest ${guest.vmid} is on node ${guest.node}, not on ${this.config.node} where this agent runs`);
    return guest;
  }

  /** Tags the guest and hot-plugs each missing NIC (one edit per NIC, so one failing NIC fails alone). */
  private async ensureGuest(
    ctx: DriverContext,
    instance: DesiredInstance,
    guest: PveGuest,
  ): Promise<{ changed: boolean; nicErrors: Map<string, DriverError> }> {
    const nicErrors = new Map<string, DriverError>();
    const owner = `${OWNER_TAG}${instance.id}`;
    let changed = await this.edit(ctx, guest, `tagging as ${instance.name}`, (config) =>
      tagsOf(config).includes(owner) ? null : { tags: [...tagsOf(config).filter((t) => ownerOf({ tags: t }) === undefined), owner].join(';') },
    );
    for (const nic of instance.nics) {
      let key = '';
      try {
        changed =
          (await this.edit(ctx, guest, `adding NIC ${nic.name}`, (config) => {
            const nics = guestNics(guest.type, config);
            if (nics.some((n) => n.mac === nic.mac.toLowerCase())) return null;
            const used = new Set(nics.map((n) => n.index));
            const index = [...Array(CAPABILITIES.nics.max).keys()].find((i) => !used.has(i));
            if (index === undefined) throw new ConflictError(`guest ${guest.vmid} has no free netN (all ${CAPABILITIES.nics.max} in use)`);
            key = `net${index}`;
            return { [key]: nicValue(guest, nic), tags: [...tagsOf(config), `${NIC_TAG}${index}`].join(';') };
          })) || changed;
      } catch (err) {
        if (err instanceof PveTaskError && key) await this.revert(ctx, guest, key);
        const error = pveError(err, `adding NIC ${nic.name} (${nic.mac}) on bridge ${nic.network} to guest ${guest.vmid}`, this.config);
        // PVE gone, or the token refused: nothing else of this guest can be vouched for
        if (error.code === 'HOST_UNREACHABLE' || error.code === 'DRIVER_CONFIG_INVALID') throw error;
        nicErrors.set(nic.id, error);
      }
    }
    return { changed, nicErrors };
  }

  /** Takes back a change a failed hot-plug task left pending, and its tag. */
  private async revert(ctx: DriverContext, guest: PveGuest, key: string): Promise<void> {
    try {
      await this.edit(ctx, guest, `reverting ${key}`, (config) => ({
        revert: key,
        tags: tagsOf(config)
          .filter((t) => t !== `${NIC_TAG}${key.slice(3)}`)
          .join(';'),
      }));
    } catch (err) {
      ctx.logger.warn('could not revert a failed hot-plug', { vmid: guest.vmid, key, error: toDriverError(err).message });
    }
  }

  /** Why a desired NIC has no host device. */
  private whyNotPlaced(instance: DesiredInstance, nic: DesiredNic, guest: PveGuest, config: GuestConfig, pending: Set<string>): DriverError {
    const key = guestNics(guest.type, config).find((n) => n.mac === nic.mac.toLowerCase())?.key;
    const label = `instance ${instance.name}: NIC ${nic.name} (${nic.mac})`;
    if (guest.status !== 'running') return new TransientError(`${label}: guest ${guest.vmid} is ${guest.status}; its NICs are on the node when it runs`);
    if (key && pending.has(key))
      return new TransientError(
        `${label} is pending as ${key}: PVE could not hot-plug it into running guest ${guest.vmid} (its hotplug option lacks network); it takes effect when the guest restarts`,
      );
    return new TransientError(`${label}: ${key ?? 'no netN'} has no host device ${key ? hostDevice(guest.type, guest.vmid, Number(key.slice(3))) : ''} yet`);
  }

  /** Removes Gatehouse's NICs and tags from guests whose instance is no longer (or differently) desired. */
  private async removeStale(ctx: DriverContext, desired: DesiredState, guests: readonly PveGuest[]): Promise<boolean> {
    let changed = false;
    for (const guest of guests) {
      const config = await this.readConfig(ctx, guest);
      const owner = ownerOf(config);
      const own = ownNicKeys(config);
      if (owner === undefined && own.length === 0) continue;
      const wanted = desired.instances.find((i) => i.id === owner);
      const wantedMacs = new Set(wanted?.nics.map((n) => n.mac.toLowerCase()) ?? []);
      const stale = guestNics(guest.type, config)
        .filter((n) => own.includes(n.key) && !wantedMacs.has(n.mac))
        .map((n) => n.key);
      if (wanted && stale.length === 0) continue;
      await this.disown(ctx, guest, config, stale, !wanted);
      changed = true;
    }
    return changed;
  }

  /** Removes the given NICs of Gatehouse's and their tags and, with `untag`, our shaping and the owner tag. */
  private async disown(ctx: DriverContext, guest: PveGuest, config: GuestConfig, keys: readonly string[], untag: boolean): Promise<void> {
    if (untag && guest.node === this.config.node)
      for (const nic of guestNics(guest.type, config)) await removeShaping(hostDevice(guest.type, guest.vmid, nic.index), this.host);
    try {
      await this.edit(ctx, guest, `removing ${keys.join(', ') || 'the tag'}`, (fresh) => {
        const present = keys.filter((k) => k in fresh);
        const tags = tagsOf(fresh).filter((t) => !keys.some((k) => t === `${NIC_TAG}${k.slice(3)}`) && !(untag && t.startsWith(OWNER_TAG)));
        if (present.length === 0 && tags.length === tagsOf(fresh).length) return null;
        const remove = [...present, ...(tags.length === 0 && fresh.tags !== undefined ? ['tags'] : [])];
        return { ...(remove.length > 0 ? { delete: remove.join(',') } : {}), ...(tags.length > 0 ? { tags: tags.join(';') } : {}) };
      });
    } catch (err) {
      throw pveError(err, `removing Gatehouse's NICs and tag from guest ${guest.vmid}`, this.config);
    }
  }

  /** Addresses as the guest reports them (LXC interfaces; QEMU guest agent when enabled), by MAC. */
  private async liveAddresses(ctx: DriverContext, guest: PveGuest, config: GuestConfig): Promise<Map<string, { name: string; addresses: string[] }>> {
    const live = new Map<string, { name: string; addresses: string[] }>();
    if (guest.status !== 'running') return live;
    type Iface = { name: string; 'hardware-address'?: string; 'ip-addresses'?: { 'ip-address'?: string; prefix?: number }[] };
    let ifaces: Iface[] = [];
    try {
      if (guest.type === 'lxc') ifaces = await this.client.get<Iface[]>(`${this.guestPath(guest)}/interfaces`, {}, ctx.signal);
      else if (/^(1|enabled=1)/.test(config.agent ?? ''))
        ifaces = (await this.client.get<{ result: Iface[] }>(`${this.guestPath(guest)}/agent/network-get-interfaces`, {}, ctx.signal)).result;
    } catch (err) {
      ctx.logger.debug('no live addresses from PVE; using the configured ones', { vmid: guest.vmid, error: toDriverError(err).message });
      return live;
    }
    for (const i of ifaces) {
      const mac = i['hardware-address']?.toLowerCase();
      if (!mac || i.name === 'lo') continue;
      const addresses = (i['ip-addresses'] ?? [])
        .filter((a) => a['ip-address'] && a.prefix !== undefined && !a['ip-address'].startsWith('fe80') && !a['ip-address'].startsWith('127.'))
        .map((a) => `${a['ip-address']}/${a.prefix}`);
      live.set(mac, { name: i.name, addresses });
    }
    return live;
  }
}

/** A desired NIC as a `netN` value: QEMU virtio on the bridge; LXC with its static addresses. */
function nicValue(guest: PveGuest, nic: DesiredNic): string {
  if (guest.type === 'qemu') return formatQemuNic({ model: 'virtio', mac: nic.mac, bridge: nic.network });
  const own = nic.addresses.filter((a) => !a.delegated);
  const v4 = own.find((a) => !a.address.includes(':'));
  const v6 = own.find((a) => a.address.includes(':'));
  return formatLxcNic({
    name: nic.name,
    mac: nic.mac,
    bridge: nic.network,
    ...(v4 ? { ip: `${v4.address}/${v4.prefixLength}`, ...(v4.gateway ? { gw: v4.gateway } : {}) } : {}),
    ...(v6 ? { ip6: `${v6.address}/${v6.prefixLength}`, ...(v6.gateway ? { gw6: v6.gateway } : {}) } : {}),
  });
}

/** Where a desired NIC is: its `netN`'s tap/veth, when the guest runs and the device is on the node. */
function placeOf(instance: DesiredInstance, nic: DesiredNic, guest: PveGuest, config: GuestConfig, links: ReadonlySet<string>): NicPlace | undefined {
  if (guest.status !== 'running') return undefined;
  const found = guestNics(guest.type, config).find((n) => n.mac === nic.mac.toLowerCase());
  if (!found) return undefined;
  const device = hostDevice(guest.type, guest.vmid, found.index);
  if (!links.has(device)) return undefined;
  return { instanceId: instance.id, nicId: nic.id, hostInterface: device, ...(found.rate !== undefined ? { pveRate: found.rate } : {}) };
}

/** Addresses from the config: LXC `ip=`/`ip6=`, QEMU cloud-init `ipconfigN`. */
function configuredAddresses(guest: PveGuest, config: GuestConfig, nic: GuestNic): string[] {
  if (guest.type === 'lxc') return nic.addresses;
  const ipconfig = config[`ipconfig${nic.index}`] ?? '';
  return ipconfig
    .split(',')
    .map((p) => /^ip6?=(.+\/\d+)$/.exec(p)?.[1])
    .filter((a): a is string => a !== undefined);
}
