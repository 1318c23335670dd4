/**
 * The ESXi host's VMs as the plugin reads them: moref, name, power state, Ethernet cards (MAC,
 * port group, connected, device key and model), the addresses VMware Tools report in `guest.net`,
 * and the `extraConfig` keys with which Gatehouse marks what it made.
 */
import { child, childText, children, type MoRef, type ObjectContent, type VsphereClient, type XmlElement } from './vsphere/index.js';

/** The extraConfig key naming the Gatehouse instance a VM belongs to. */
export const OWNER_KEY = 'gatehouse.instance';
/** The extraConfig key listing the MACs of the NICs Gatehouse added (comma-separated, lower case). */
export const NICS_KEY = 'gatehouse.nics';

/** The vSphere types of Ethernet cards. */
const ETHERNET_TYPES = new Set([
  'VirtualVmxnet3',
  'VirtualVmxnet3Vrdma',
  'VirtualVmxnet2',
  'VirtualVmxnet',
  'VirtualE1000',
  'VirtualE1000e',
  'VirtualPCNet32',
  'VirtualSriovEthernetCard',
]);

/** One Ethernet card of a VM. */
export interface VmNic {
  key: number;
  model: string;
  label: string;
  mac: string;
  /** The standard port group (network backing's device name), or '' for other backings. */
  portGroup: string;
  connected: boolean;
  /** CIDRs VMware Tools report for this MAC. */
  guestAddresses: string[];
}

/** One VM. */
export interface Vm {
  ref: MoRef;
  name: string;
  poweredOn: boolean;
  template: boolean;
  nics: VmNic[];
  /** The Gatehouse instance id it is marked with, if any. */
  owner?: string;
  /** MACs of the NICs Gatehouse added. */
  ownedMacs: string[];
}

const PATHS = ['name', 'runtime.powerState', 'config.template', 'config.hardware.device', 'config.extraConfig', 'guest.net'];

/** Every VM on the host. */
export async function readVms(client: VsphereClient, signal?: AbortSignal): Promise<Vm[]> {
  return (await client.retrieveAll('VirtualMachine', PATHS, signal)).map(toVm).sort((a, b) => a.name.localeCompare(b.name));
}

/** One VM, or undefined when it is gone. */
export async function readVm(client: VsphereClient, ref: MoRef, signal?: AbortSignal): Promise<Vm | undefined> {
  const content = await client.retrieveOne(ref, PATHS, signal);
  return content && content.props.has('name') ? toVm(content) : undefined;
}

function toVm(content: ObjectContent): Vm {
  const p = content.props;
  const extra = new Map<string, string>();
  // later entries win (vcsim appends); an empty value is a removed key, as on ESXi
  for (const o of children(p.get('config.extraConfig'), 'OptionValue')) extra.set(childText(o, 'key') ?? '', childText(o, 'value') ?? '');
  const guest = children(p.get('guest.net'), 'GuestNicInfo');
  const nics = children(p.get('config.hardware.device'), 'VirtualDevice')
    .filter((d) => ETHERNET_TYPES.has(d.attrs.type ?? ''))
    .map((d): VmNic => {
      const mac = (childText(d, 'macAddress') ?? '').toLowerCase();
      const backing = child(d, 'backing');
      return {
        key: Number(childText(d, 'key')),
        model: d.attrs.type!,
        label: childText(child(d, 'deviceInfo'), 'label') ?? '',
        mac,
        portGroup: backing?.attrs.type === 'VirtualEthernetCardNetworkBackingInfo' ? (childText(backing, 'deviceName') ?? '') : '',
        connected: childText(child(d, 'connectable'), 'connected') === 'true',
        guestAddresses: guestAddresses(guest.find((g) => (childText(g, 'macAddress') ?? '').toLowerCase() === mac)),
      };
    });
  const owner = extra.get(OWNER_KEY) || undefined;
  return {
    ref: content.obj,
    name: p.get('name')?.text.trim() ?? content.obj.value,
    poweredOn: p.get('runtime.powerState')?.text.trim() === 'poweredOn',
    template: p.get('config.template')?.text.trim() === 'true',
    nics,
    ...(owner ? { owner } : {}),
    ownedMacs: (extra.get(NICS_KEY) ?? '').split(',').filter(Boolean),
  };
}

/** A guest NIC's addresses as CIDRs: `ipConfig.ipAddress` with prefix lengths, else bare `ipAddress` as host routes. */
function guestAddresses(g: XmlElement | undefined): string[] {
  if (!g) return [];
  const configured = children(child(g, 'ipConfig'), 'ipAddress').map((a) => `${childText(a, 'ipAddress')}/${childText(a, 'prefixLength')}`);
  if (configured.length) return configured;
  return children(g, 'ipAddress').map((a) => {
    const ip = a.text.trim();
    return `${ip}/${ip.includes(':') ? 128 : 32}`;
  });
}
