/**
 * How Gatehouse finds its things in LXD without remembering them: an instance it manages carries
 * the config key `user.gatehouse.instance-id` (the Gatehouse instance id), and a NIC device it
 * hot-plugged is named `gh-` + 12 hex digits of a hash of the Gatehouse NIC id. Everything else on
 * an instance (devices from profiles, the admin's own NICs, other config) is never changed or
 * removed by Gatehouse.
 */
import { createHash } from 'node:crypto';
import type { DiscoveredInstance } from '@gatehouse/sdk';
import type { LxdInstance } from './lxd-client.js';

/** Instance config key naming the Gatehouse instance an LXD instance is. */
export const OWNER_KEY = 'user.gatehouse.instance-id';
/** Name prefix of the NIC devices Gatehouse adds. */
export const DEVICE_PREFIX = 'gh-';

/** The device name of a NIC Gatehouse hot-plugs. */
export function nicDeviceName(nicId: string): string {
  return `${DEVICE_PREFIX}${createHash('sha256').update(nicId).digest('hex').slice(0, 12)}`;
}

/** A NIC device of an instance with what LXD knows of it. */
export interface NicDevice {
  /** The device's key in the instance's devices. */
  device: string;
  /** The interface name inside the instance. */
  name: string;
  /** Lower-case MAC: the device's `hwaddr`, else the one LXD generated (`volatile.<dev>.hwaddr`), else the live one. */
  mac: string;
  config: Record<string, string>;
  /** The host side of the NIC (the veth), while the instance runs. */
  hostInterface?: string;
  /** Addresses inside the instance (CIDR form, global scope), while it runs. */
  addresses: string[];
}

/** Every NIC device of an instance, profiles included (expanded devices). */
export function nicDevices(instance: LxdInstance): NicDevice[] {
  return Object.entries(instance.expanded_devices ?? {})
    .filter(([, d]) => d.type === 'nic')
    .map(([device, config]) => {
      const name = config.name ?? device;
      const live = instance.state?.network?.[name];
      const mac = (config.hwaddr ?? instance.config[`volatile.${device}.hwaddr`] ?? live?.hwaddr ?? '').toLowerCase();
      const hostInterface = instance.config[`volatile.${device}.host_name`] ?? (live?.host_name || undefined);
      const addresses = (live?.addresses ?? []).filter((a) => a.scope === 'global').map((a) => `${a.address}/${a.netmask}`);
      return { device, name, mac, config, addresses, ...(hostInterface ? { hostInterface } : {}) };
    });
}

/** The NIC devices Gatehouse added to an instance (local devices only: profiles are not ours). */
export function ownDevices(instance: LxdInstance): string[] {
  return Object.entries(instance.devices ?? {})
    .filter(([name, d]) => name.startsWith(DEVICE_PREFIX) && d.type === 'nic')
    .map(([name]) => name);
}

/** An LXD instance as `discover` reports it. */
export function discovered(instance: LxdInstance): DiscoveredInstance {
  return {
    externalId: instance.name,
    name: instance.name,
    running: instance.status === 'Running',
    nics: nicDevices(instance).map((n) => ({
      name: n.name,
      mac: n.mac,
      addresses: n.addresses,
      ...(n.hostInterface ? { hostInterface: n.hostInterface } : {}),
    })),
  };
}
