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
  DRIVER_API_VERSION,
  DriverError,
  DriverInternalError,
  HostUnreachableError,
  TransientError,
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
  type ObservedState,
  type StatsResult,
} from '@gatehouse/sdk';
import { Dataplane, applyShaping, observeShaping, removeShaping, shapingFor } from '@gatehouse/dataplane';
import type { LxdDriverConfig } from './config.js';
import { LxdApiError, LxdClient, type LxdInstance } from './lxd-client.js';
import { OWNER_KEY, discovered, nicDeviceName, nicDevices, ownDevices } from './instances.js';

/** What this driver does, and how (see README for why). */
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

/** Where a desired NIC is: its host-side veth. */
interface NicPlace {
  instanceId: string;
  nicId: string;
  hostInterface: string;
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

export class LxdDriver implements NetworkDriver {
  readonly id = 'lxd';
  readonly apiVersion = DRIVER_API_VERSION;
  readonly capabilities = CAPABILITIES;
  readonly client: LxdClient;
  private readonly host: ExecTarget;
  private readonly dataplane: Dataplane;

  constructor(readonly config: LxdDriverConfig) {
    this.client = new LxdClient(config.socket, config.timeoutMs);
    this.host = config.hostNetns ? { netns: config.hostNetns } : {};
    this.dataplane = new Dataplane(this.host);
  }

  /** Every LXD instance with its NICs (MAC, addresses, host-side veth). */
  async discover(ctx: DriverContext): Promise<{ instances: DiscoveredInstance[] }> {
    return { instances: (await this.lxdInstances(ctx)).map(discovered) };
  }

  /**
   * Converges NICs, forwards, firewalls and shaping to `desired`; idempotent. LXD unreachable (before
   * or during the apply): the objects it is needed for fail with HOST_UNREACHABLE, and the nftables
   * table is still applied, since containers keep running while their daemon is away.
   */
  async apply(ctx: DriverContext, input: { desired: DesiredState; repair?: boolean }): Promise<ApplyResult> {
    const desired = validateDesiredState(input.desired, 'input.desired');
    let changed = false;
    const places: NicPlace[] = [];
    const instanceErrors = new Map<string, DriverError>();
    const nicErrors = new Map<string, DriverError>();
    let lxd: LxdInstance[] | undefined;
    try {
      lxd = await this.lxdInstances(ctx);
    } catch (err) {
      if (!(err instanceof HostUnreachableError)) throw err;
      ctx.logger.warn('LXD is unreachable; applying the nftables table only', { error: err.message });
      for (const instance of desired.instances) instanceErrors.set(instance.id, err);
    }
    if (lxd) {
      try {
        changed = (await this.removeStale(ctx, desired, lxd)) || changed;
      } catch (err) {
        // what is left over stays until the next apply; the desired objects may still apply
        ctx.logger.warn('could not remove what Gatehouse left on LXD instances no longer desired', { error: toDriverError(err).message });
      }
      for (const instance of desired.instances) {
        try {
          const out = await this.ensureInstance(ctx, instance, lxd);
          changed ||= out.changed;
          places.push(...out.places);
          for (const [nicId, error] of out.nicErrors) nicErrors.set(nicId, error);
        } catch (err) {
          instanceErrors.set(instance.id, lxdError(err, `applying instance ${instance.name}`));
        }
      }
    }

    const results: ObjectResult[] = [];
    const failed = (objectType: ObjectResult['objectType'], objectId: string, error: DriverError): ObjectResult => ({
      objectType,
      objectId,
      status: 'failed',
      error: error.toJSON(),
    });
    for (const instance of desired.instances) {
      for (const nic of instance.nics) {
        const error =
          instanceErrors.get(instance.id) ??
          nicErrors.get(nic.id) ??
          (places.some((p) => p.nicId === nic.id)
            ? undefined
            : new TransientError(`instance ${instance.name}: NIC ${nic.name} (${nic.mac}) has no host interface yet`));
        results.push(error ? failed('nic', nic.id, error) : { objectType: 'nic', objectId: nic.id, status: 'applied' });
      }
    }

    // forwards and firewalls: one nftables transaction in LXD's namespace, whatever LXD's state
    try {
      changed = (await this.dataplane.apply(desired, { force: input.repair ?? false })).changed || changed;
      for (const instance of desired.instances) {
        const error = instanceErrors.get(instance.id);
        for (const f of instance.portForwards)
          results.push(error ? failed('port_forward', f.id, error) : { objectType: 'port_forward', objectId: f.id, status: 'applied' });
        for (const r of instance.firewall.rules)
          results.push(error ? failed('firewall_rule', r.id, error) : { objectType: 'firewall_rule', objectId: r.id, status: 'applied' });
      }
    } catch (err) {
      const error = toDriverError(err);
      ctx.logger.error('nftables transaction failed; the previous ruleset stays', { error: error.message });
      for (const instance of desired.instances) {
        for (const f of instance.portForwards) results.push(failed('port_forward', f.id, error));
        for (const r of instance.firewall.rules) results.push(failed('firewall_rule', r.id, error));
      }
    }

    // shaping: tc on each NIC's veth, the NIC's own limit else the instance-wide one
    for (const instance of desired.instances) {
      const instanceError = instanceErrors.get(instance.id);
      for (const limit of instance.bandwidth) {
        if (instanceError) {
          results.push(failed('bandwidth_limit', limit.id, instanceError));
          continue;
        }
        try {
          const targets = places.filter((p) => p.instanceId === instance.id && (limit.nicId === null || p.nicId === limit.nicId));
          if (targets.length === 0) throw new TransientError(`instance ${instance.name} has no NIC with a host interface to shape`);
          // LXD re-creates its own qdiscs on the veth whenever the device changes: never share a veth with them
          const shared = targets.find((p) => p.lxdLimits.length > 0);
          if (shared)
            throw new ConflictError(
              `Failed applying bandwidth limit of instance ${instance.name}: its LXD NIC device on ${shared.hostInterface} has LXD's own ${shared.lxdLimits.join(', ')}; remove that or this limit`,
            );
          for (const place of targets)
            changed = (await applyShaping({ iface: place.hostInterface, spec: shapingFor(instance, place.nicId) }, this.host)).changed || changed;
          results.push({ objectType: 'bandwidth_limit', objectId: limit.id, status: 'applied' });
        } catch (err) {
          results.push(failed('bandwidth_limit', limit.id, toDriverError(err)));
        }
      }
      if (instanceError) continue;
      // NICs without a limit carry no shaping of ours
      for (const place of places.filter((p) => p.instanceId === instance.id && shapingFor(instance, p.nicId) === null)) {
        try {
          changed = (await applyShaping({ iface: place.hostInterface, spec: null }, this.host)).changed || changed;
        } catch (err) {
          ctx.logger.warn('could not remove shaping from a NIC without a limit', { iface: place.hostInterface, error: toDriverError(err).message });
        }
      }
    }
    return { changed, objects: results };
  }

  /** Forwards and firewalls from the live nftables table; shaping of each desired NIC's veth (needs `desired` and LXD). */
  async observe(ctx: DriverContext, input: { desired?: DesiredState }): Promise<{ state: ObservedState }> {
    const { forwards, firewalls } = await this.dataplane.observe();
    const shaping = input.desired ? await observeShaping(this.places(input.desired, await this.lxdInstances(ctx)), this.host) : [];
    return { state: sortObservation({ forwards, firewalls: firewalls.map(({ unrecognized: _, ...f }) => f), shaping }) };
  }

  /** Per-forward counters from nftables; per NIC (given `desired`), LXD's interface counters, from the instance's side. */
  async stats(ctx: DriverContext, input: { desired?: DesiredState }): Promise<StatsResult> {
    const counters = await this.dataplane.counters();
    const result: StatsResult = { nics: [], forwards: [...counters.forwards].map(([forwardId, counter]) => ({ forwardId, counter })) };
    if (!input.desired) return result;
    const lxd = await this.lxdInstances(ctx);
    for (const instance of input.desired.instances) {
      const current = lxd.find((i) => i.name === lxdName(instance));
      if (!current) continue;
      const devices = nicDevices(current);
      for (const nic of instance.nics) {
        const device = devices.find((d) => d.mac === nic.mac.toLowerCase());
        const live = device && current.state?.network?.[device.name];
        if (!live) continue;
        // LXD reads these inside the instance: received is what came into it
        result.nics.push({
          instanceId: instance.id,
          nicId: nic.id,
          rx: { bytes: live.counters.bytes_received, packets: live.counters.packets_received },
          tx: { bytes: live.counters.bytes_sent, packets: live.counters.packets_sent },
        });
      }
    }
    return result;
  }

  /** Removes one instance's forwards, firewall, shaping, hot-plugged NICs and tag; succeeds when already gone. */
  async release(ctx: DriverContext, input: { instanceId: string }): Promise<{ released: boolean }> {
    let released = await this.dataplane.release(input.instanceId);
    for (const instance of await this.lxdInstances(ctx)) {
      if (instance.config[OWNER_KEY] !== input.instanceId) continue;
      await this.disown(ctx, instance, ownDevices(instance), true);
      released = true;
    }
    return { released };
  }

  /** Removes what belongs to Gatehouse instances not in `validInstanceIds` (found by tags, not memory). */
  async gc(ctx: DriverContext, input: { validInstanceIds: readonly string[] }): Promise<{ removedInstanceIds: string[] }> {
    const valid = new Set(input.validInstanceIds);
    const removed = new Set(await this.dataplane.gc(input.validInstanceIds));
    for (const instance of await this.lxdInstances(ctx)) {
      const owner = instance.config[OWNER_KEY];
      if (owner === undefined || valid.has(owner)) continue;
      await this.disown(ctx, instance, ownDevices(instance), true);
      removed.add(owner);
    }
    return { removedInstanceIds: [...removed] };
  }

  private async lxdInstances(ctx: DriverContext): Promise<LxdInstance[]> {
    try {
      return await this.client.instances(ctx.signal);
    } catch (err) {
      throw lxdError(err, 'listing LXD instances');
    }
  }

  /** Tags the instance, hot-plugs its missing NICs and configures their addresses inside it. */
  private async ensureInstance(ctx: DriverContext, instance: Instance, lxd: LxdInstance[]): Promise<InstanceOutcome> {
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
    nic: Instance['nics'][number],
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
function lxdName(instance: Instance): string {
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
