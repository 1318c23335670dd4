/**
 * The LXD driver. Instances are LXD instances (`externalId` is the instance name), reached through
 * LXD's REST API on its unix socket. NICs are LXD NIC devices on an LXD network, found by MAC and
 * hot-plugged when missing, with the NIC's IPv4 address as the device's `ipv4.address` (LXD's
 * DHCP hands it out) and configured inside the running guest through the exec API. NAT, firewall
 * and counters go through the nftables dataplane in the namespace holding LXD's bridges; shaping
 * through tc on each NIC's host-side veth (LXD's own `limits.egress` needs the tc police action,
 * which this kernel lacks; see README).
 */
import {
  CommandError,
  ConflictError,
  DriverError,
  DriverInternalError,
  HostUnreachableError,
  TransientError,
  toDriverError,
  type DesiredInstance,
  type DesiredNic,
  type DesiredState,
  type DiscoveredInstance,
  type DriverContext,
  type StatsResult,
} from '@gatehouse/sdk';
import { DATAPLANE_CAPABILITIES, DataplaneDriver, removeShaping, type HostSide, type NicPlacement } from '@gatehouse/dataplane';
import type { LxdDriverConfig } from './config.js';
import { LxdApiError, LxdClient, type LxdInstance } from './lxd-client.js';
import { OWNER_KEY, discovered, nicDeviceName, nicDevices, ownDevices } from './instances.js';

/** What this driver does, and how (see README for why): everything the dataplane offers. */
export const CAPABILITIES = DATAPLANE_CAPABILITIES;

/** Where a desired NIC is: its host-side veth. */
interface NicPlace extends NicPlacement {
  /** LXD's own `limits.*` settings on the NIC's device (tc on the same veth: ours would fight them). */
  lxdLimits: string[];
}

/** The outcome of making one instance's NICs match. */
interface InstanceOutcome {
  changed: boolean;
  places: NicPlace[];
  /** NICs that failed alone (the rest of the instance applied). */
  nicErrors: Map<string, DriverError>;
}

/** The driver: NICs are LXD NIC devices, hot-plugged through LXD's API; the rest is the dataplane base's. */
export class LxdDriver extends DataplaneDriver<NicPlace> {
  readonly id = 'lxd';
  readonly capabilities = CAPABILITIES;
  readonly client: LxdClient;

  constructor(readonly config: LxdDriverConfig) {
    super(config.hostNetns ? { netns: config.hostNetns } : {});
    this.client = new LxdClient(config.socket, config.timeoutMs);
  }

  /** Every LXD instance with its NICs (MAC, addresses, host-side veth). */
  async discover(ctx: DriverContext): Promise<{ instances: DiscoveredInstance[] }> {
    return { instances: (await this.lxdInstances(ctx)).map(discovered) };
  }

  /**
   * Tags instances, hot-plugs their NICs and configures them inside. LXD unreachable (before or
   * during the apply): the objects it is needed for fail with HOST_UNREACHABLE, and the nftables
   * table is still applied, since containers keep running while their daemon is away.
   */
  protected async placeNics(ctx: DriverContext, desired: DesiredState): Promise<HostSide<NicPlace>> {
    const { side, inventory: lxd } = await this.readBackend(ctx, desired, 'LXD', {
      read: () => this.lxdInstances(ctx),
      removeStale: (instances) => this.removeStale(ctx, desired, instances),
    });
    if (!lxd) return side;
    for (const instance of desired.instances) {
      try {
        const out = await this.ensureInstance(ctx, instance, lxd);
        side.changed ||= out.changed;
        side.places.push(...out.places);
        for (const nic of instance.nics) {
          const error =
            out.nicErrors.get(nic.id) ??
            (out.places.some((p) => p.nicId === nic.id)
              ? undefined
              : new TransientError(`instance ${instance.name}: NIC ${nic.name} (${nic.mac}) has no host interface yet`));
          if (error) side.nicErrors.set(nic.id, error);
        }
      } catch (err) {
        side.instanceErrors.set(instance.id, lxdError(err, `applying instance ${instance.name}`));
      }
    }
    return side;
  }

  protected async locateNics(ctx: DriverContext, desired: DesiredState): Promise<NicPlace[]> {
    return this.places(desired, await this.lxdInstances(ctx));
  }

  /** LXD's networks switch routing on themselves. */
  protected override async prepareHost(): Promise<void> {}

  /** Forwards and firewalls work wherever LXD has the instance (its errors are the instance's). */
  protected override unreachable(): undefined {
    return undefined;
  }

  /** LXD re-creates its own qdiscs on the veth whenever the device changes: never share a veth with them. */
  protected override checkShapingTargets(instance: DesiredInstance, targets: readonly NicPlace[]): void {
    const shared = targets.find((p) => p.lxdLimits.length > 0);
    if (shared)
      throw new ConflictError(
        `Failed applying bandwidth limit of instance ${instance.name}: its LXD NIC device on ${shared.hostInterface} has LXD's own ${shared.lxdLimits.join(', ')}; remove that or this limit`,
      );
  }

  /** LXD's interface counters, read from the instance's side: received is what came into it. */
  protected override async nicStats(ctx: DriverContext, desired: DesiredState): Promise<StatsResult['nics']> {
    const nics: StatsResult['nics'] = [];
    const lxd = await this.lxdInstances(ctx);
    for (const instance of desired.instances) {
      const current = lxd.find((i) => i.name === lxdName(instance));
      if (!current) continue;
      const devices = nicDevices(current);
      for (const nic of instance.nics) {
        const device = devices.find((d) => d.mac === nic.mac.toLowerCase());
        const live = device && current.state?.network?.[device.name];
        if (!live) continue;
        // LXD reads these inside the instance: received is what came into it
        nics.push({
          instanceId: instance.id,
          nicId: nic.id,
          rx: { bytes: live.counters.bytes_received, packets: live.counters.packets_received },
          tx: { bytes: live.counters.bytes_sent, packets: live.counters.packets_sent },
        });
      }
    }
    return nics;
  }

  /** Release and gc take back the hot-plugged NICs, shaping and tag of the LXD instances tagged for Gatehouse instances. */
  protected override async taggedInstances(ctx: DriverContext) {
    return (await this.lxdInstances(ctx)).map((instance) => ({
      owner: instance.config[OWNER_KEY],
      disown: () => this.disown(ctx, instance, ownDevices(instance), true),
    }));
  }

  private async lxdInstances(ctx: DriverContext): Promise<LxdInstance[]> {
    try {
      return await this.client.instances(ctx.signal);
    } catch (err) {
      throw lxdError(err, 'listing LXD instances');
    }
  }

  /** Tags the instance, hot-plugs its missing NICs and configures their addresses inside it. */
  private async ensureInstance(ctx: DriverContext, instance: DesiredInstance, lxd: LxdInstance[]): Promise<InstanceOutcome> {
    const name = lxdName(instance);
    let current = lxd.find((i) => i.name === name);
    if (!current) throw new TransientError(`instance ${instance.name}: LXD has no instance ${name} (deleted, or not created yet)`);
    if (current.status !== 'Running' || !current.state?.pid)
      throw new TransientError(`instance ${instance.name}: LXD instance ${name} is ${current.status}; its NICs are configured when it runs`);
    const path = `/1.0/instances/${encodeURIComponent(name)}`;
    let changed = false;
    if (current.config[OWNER_KEY] !== instance.id) {
      // the tag lets release and gc (in a process that applied nothing) find what is Gatehouse's
      await this.client.call('PATCH', path, { config: { [OWNER_KEY]: instance.id } }, ctx.signal);
      changed = true;
    }
    const nicErrors = new Map<string, DriverError>();
    let devicesChanged = false;
    for (const nic of instance.nics) {
      const v4 = nic.addresses.find((a) => !a.delegated && !a.address.includes(':'));
      const device = nicDevices(current).find((d) => d.mac === nic.mac.toLowerCase());
      try {
        if (!device) {
          // hot-plug: LXD's DHCP hands the device's ipv4.address to the guest; we also set it below
          const config = { type: 'nic', network: nic.network, name: nic.name, hwaddr: nic.mac.toLowerCase(), ...(v4 ? { 'ipv4.address': v4.address } : {}) };
          await this.client.call('PATCH', path, { devices: { [nicDeviceName(nic.id)]: config } }, ctx.signal);
          ctx.logger.info('hot-plugged a NIC', { instance: name, device: nicDeviceName(nic.id), mac: nic.mac });
          devicesChanged = true;
        } else if (v4 && device.config['ipv4.address'] !== v4.address && device.config.network) {
          // a NIC on a managed network: its DHCP reservation follows the desired address (a local
          // device of the same name overrides one from a profile)
          await this.client.call('PATCH', path, { devices: { [device.device]: { ...device.config, 'ipv4.address': v4.address } } }, ctx.signal);
          devicesChanged = true;
        }
      } catch (err) {
        // LXD gone in the middle: nothing of this instance can be vouched for
        if (err instanceof HostUnreachableError) throw err;
        nicErrors.set(nic.id, lxdError(err, `adding NIC ${nic.name} (${nic.mac}) on network ${nic.network} to instance ${name}`));
      }
    }
    if (devicesChanged) {
      changed = true;
      current = (await this.client.get<LxdInstance>(`${path}?recursion=1`, ctx.signal)) ?? current;
      current.state = (await this.client.get(`${path}/state`, ctx.signal)) ?? current.state;
    }
    // static addresses inside the guest: only those it does not have yet (DHCP may have done it)
    const places: NicPlace[] = [];
    const gatewaysSet = new Set<string>();
    for (const nic of instance.nics) {
      if (nicErrors.has(nic.id)) continue;
      const device = nicDevices(current).find((d) => d.mac === nic.mac.toLowerCase());
      if (!device) continue;
      try {
        changed = (await this.configureGuest(ctx, name, device.name, device.addresses, nic, gatewaysSet)) || changed;
        if (device.hostInterface)
          places.push({ instanceId: instance.id, nicId: nic.id, hostInterface: device.hostInterface, lxdLimits: lxdLimits(device.config) });
      } catch (err) {
        if (err instanceof HostUnreachableError) throw err;
        nicErrors.set(nic.id, lxdError(err, `configuring NIC ${nic.name} inside instance ${name}`));
      }
    }
    return { changed, places, nicErrors };
  }

  /** Brings the NIC up and adds its missing addresses and default routes (first NIC with a gateway per family). */
  private async configureGuest(
    ctx: DriverContext,
    instance: string,
    ifname: string,
    have: readonly string[],
    nic: DesiredNic,
    gatewaysSet: Set<string>,
  ): Promise<boolean> {
    const own = nic.addresses.filter((a) => !a.delegated);
    const commands: string[][] = [];
    for (const a of own) {
      const v6 = a.address.includes(':');
      const family = v6 ? ['-6'] : [];
      if (!have.includes(`${a.address}/${a.prefixLength}`)) {
        if (commands.length === 0) commands.push(['ip', 'link', 'set', 'dev', ifname, 'up']);
        commands.push(['ip', ...family, 'addr', 'replace', `${a.address}/${a.prefixLength}`, 'dev', ifname, ...(v6 ? ['nodad'] : [])]);
        if (a.gateway && !gatewaysSet.has(v6 ? '6' : '4')) commands.push(['ip', ...family, 'route', 'replace', 'default', 'via', a.gateway, 'dev', ifname]);
      }
      if (a.gateway) gatewaysSet.add(v6 ? '6' : '4');
    }
    for (const command of commands) {
      const { exitCode, stderr } = await this.client.exec(instance, command, ctx.signal);
      if (exitCode !== 0)
        throw new DriverInternalError(`\`${command.join(' ')}\` inside ${instance} exited with ${exitCode}: ${stderr.trim() || '(no output)'}`);
    }
    if (commands.length > 0) ctx.logger.info('configured NIC addresses inside the instance', { instance, nic: ifname });
    return commands.length > 0;
  }

  /** Takes back what Gatehouse left on LXD instances that are no longer (or differently) desired. */
  private async removeStale(ctx: DriverContext, desired: DesiredState, lxd: LxdInstance[]): Promise<boolean> {
    let changed = false;
    for (const current of lxd) {
      const wanted = desired.instances.find((i) => lxdName(i) === current.name);
      const wantedDevices = new Set(wanted?.nics.map((n) => nicDeviceName(n.id)) ?? []);
      const staleDevices = ownDevices(current).filter((d) => !wantedDevices.has(d));
      const owner = current.config[OWNER_KEY];
      const staleOwner = owner !== undefined && owner !== wanted?.id;
      if (staleDevices.length === 0 && !staleOwner) continue;
      await this.disown(ctx, current, staleDevices, staleOwner);
      changed = true;
    }
    return changed;
  }

  /**
   * Removes the given Gatehouse NIC devices from an instance and, with `untag`, our shaping on its
   * veths and its tag — one PUT of the instance's own config, so LXD applies it whole or not at all.
   */
  private async disown(ctx: DriverContext, instance: LxdInstance, devices: readonly string[], untag: boolean): Promise<void> {
    if (untag) {
      for (const nic of nicDevices(instance)) if (nic.hostInterface) await removeShaping(nic.hostInterface, this.host);
    }
    const path = `/1.0/instances/${encodeURIComponent(instance.name)}`;
    // re-read: the listing may be older than this instance's last change
    const fresh = await this.client.get<LxdInstance & Record<string, unknown>>(path, ctx.signal);
    if (!fresh) return;
    const config = { ...fresh.config };
    if (untag) delete config[OWNER_KEY];
    const keep = Object.fromEntries(Object.entries(fresh.devices).filter(([name]) => !devices.includes(name)));
    const { architecture, ephemeral, profiles, stateful, description } = fresh as Record<string, unknown>;
    try {
      await this.client.call('PUT', path, { architecture, config, devices: keep, ephemeral, profiles, stateful, description }, ctx.signal);
    } catch (err) {
      throw lxdError(err, `removing Gatehouse's NICs and tag from instance ${instance.name}`);
    }
    ctx.logger.info('removed what Gatehouse made on an LXD instance', { instance: instance.name, devices, untagged: untag });
  }

  /** Where each desired NIC is, without changing anything. */
  private places(desired: DesiredState, lxd: LxdInstance[]): NicPlace[] {
    const places: NicPlace[] = [];
    for (const instance of desired.instances) {
      const current = lxd.find((i) => i.name === lxdName(instance));
      if (!current) continue;
      const devices = nicDevices(current);
      for (const nic of instance.nics) {
        const hostInterface = devices.find((d) => d.mac === nic.mac.toLowerCase())?.hostInterface;
        if (hostInterface) places.push({ instanceId: instance.id, nicId: nic.id, hostInterface, lxdLimits: [] });
      }
    }
    return places;
  }
}

/** LXD's own shaping settings on a NIC device. */
function lxdLimits(config: Record<string, string>): string[] {
  return ['limits.ingress', 'limits.egress', 'limits.max'].filter((k) => config[k]).map((k) => `${k}=${config[k]}`);
}

/** The LXD instance name of a desired instance: its external id, else its name. */
function lxdName(instance: DesiredInstance): string {
  return instance.externalId ?? instance.name;
}

/** An error as the SDK's: unreachable stays so, an LXD refusal is a conflict with LXD's message, 404 is transient. */
function lxdError(err: unknown, what: string): DriverError {
  if (err instanceof DriverError) return err;
  if (err instanceof LxdApiError) {
    // not there (yet), or LXD starting up or shutting down: trying again later can succeed
    if (err.status === 404 || err.status === 503) return new TransientError(`Failed ${what}: ${err.lxdMessage}`, { cause: err });
    return new ConflictError(`Failed ${what}: LXD refused: ${err.lxdMessage}`);
  }
  if (err instanceof CommandError) return new DriverInternalError(`Failed ${what}: ${err.message}`, { cause: err });
  return toDriverError(err);
}
