/**
 * PVE's property strings (`virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=5`): comma-separated
 * `key=value` pairs, one bare value for the format's default key, and key aliases (`virtio=MAC`
 * means `model=virtio,macaddr=MAC`). The NIC formats of QEMU and LXC `netN` are read and written
 * here, for the driver and for the test server alike.
 */

/** A key alias: the key names the value of `keyAlias`, its value is the value of `alias`. */
export interface KeyAlias {
  alias: string;
  keyAlias: string;
}

/** Parses a property string; throws Error naming the part it cannot read. */
export function parsePropertyString(value: string, defaultKey?: string, keyAliases: Record<string, KeyAlias> = {}): Record<string, string> {
  const out: Record<string, string> = {};
  const set = (key: string, v: string) => {
    if (key in out) throw new Error(`duplicate key in property string: ${key}`);
    out[key] = v;
  };
  for (const part of value.split(',')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    if (eq < 0) {
      if (!defaultKey || defaultKey in out) throw new Error(`value without a key in property string: ${part}`);
      set(defaultKey, part);
      continue;
    }
    const key = part.slice(0, eq);
    const v = part.slice(eq + 1);
    const alias = keyAliases[key];
    if (alias) {
      set(alias.keyAlias, key);
      set(alias.alias, v);
    } else {
      set(key, v);
    }
  }
  return out;
}

/** The QEMU NIC models (each also a key alias: `virtio=MAC`). */
export const QEMU_NIC_MODELS = [
  'e1000',
  'e1000-82540em',
  'e1000-82544gc',
  'e1000-82545em',
  'e1000e',
  'i82551',
  'i82557b',
  'i82559er',
  'ne2k_isa',
  'ne2k_pci',
  'pcnet',
  'rtl8139',
  'virtio',
  'vmxnet3',
] as const;

const QEMU_ALIASES: Record<string, KeyAlias> = Object.fromEntries(QEMU_NIC_MODELS.map((m) => [m, { alias: 'macaddr', keyAlias: 'model' }]));

/** A `netN` of either guest type, as the driver uses it. */
export interface GuestNic {
  /** `net0` … */
  key: string;
  index: number;
  /** Lower-case MAC. */
  mac: string;
  bridge?: string;
  tag?: number;
  firewall: boolean;
  /** PVE's own rate limit (megabytes per second), when set. */
  rate?: string;
  /** LXC: the interface name inside the container. */
  name?: string;
  /** LXC: the static addresses (`ip=`, `ip6=` in CIDR form; not dhcp/manual/auto). */
  addresses: string[];
  /** Everything else, kept when the NIC is rewritten. */
  raw: Record<string, string>;
}

/** Reads a QEMU `netN` value (`virtio=MAC,bridge=vmbr0,firewall=1,tag=5,rate=12.5`). */
export function parseQemuNic(key: string, value: string): GuestNic {
  const raw = parsePropertyString(value, 'model', QEMU_ALIASES);
  return common(key, raw, raw.macaddr, []);
}

/** Reads an LXC `netN` value (`name=eth0,bridge=vmbr0,hwaddr=MAC,ip=10.0.0.5/24,gw=10.0.0.1,type=veth`). */
export function parseLxcNic(key: string, value: string): GuestNic {
  const raw = parsePropertyString(value);
  const addresses = [raw.ip, raw.ip6].filter((a): a is string => a !== undefined && a.includes('/'));
  return { ...common(key, raw, raw.hwaddr, addresses), ...(raw.name ? { name: raw.name } : {}) };
}

function common(key: string, raw: Record<string, string>, mac: string | undefined, addresses: string[]): GuestNic {
  return {
    key,
    index: Number(key.slice(3)),
    mac: (mac ?? '').toLowerCase(),
    firewall: raw.firewall === '1',
    addresses,
    raw,
    ...(raw.bridge ? { bridge: raw.bridge } : {}),
    ...(raw.tag ? { tag: Number(raw.tag) } : {}),
    ...(raw.rate ? { rate: raw.rate } : {}),
  };
}

/** A QEMU `netN` value as PVE writes it: the model keyed by the MAC first. */
export function formatQemuNic(nic: { model: string; mac: string; bridge: string; tag?: number; firewall?: boolean }): string {
  return [`${nic.model}=${nic.mac.toUpperCase()}`, `bridge=${nic.bridge}`, `firewall=${nic.firewall ? 1 : 0}`, ...(nic.tag ? [`tag=${nic.tag}`] : [])].join(
    ',',
  );
}

/** An LXC `netN` value as PVE writes it. */
export function formatLxcNic(nic: { name: string; mac: string; bridge: string; ip?: string; gw?: string; ip6?: string; gw6?: string; tag?: number }): string {
  return [
    `name=${nic.name}`,
    `bridge=${nic.bridge}`,
    'firewall=0',
    ...(nic.gw ? [`gw=${nic.gw}`] : []),
    ...(nic.gw6 ? [`gw6=${nic.gw6}`] : []),
    `hwaddr=${nic.mac.toUpperCase()}`,
    ...(nic.ip ? [`ip=${nic.ip}`] : []),
    ...(nic.ip6 ? [`ip6=${nic.ip6}`] : []),
    ...(nic.tag ? [`tag=${nic.tag}`] : []),
    'type=veth',
  ].join(',');
}

/** The `netN` keys of a config, parsed for its guest type, by index. Unreadable ones are skipped. */
export function guestNics(type: 'qemu' | 'lxc', config: Record<string, unknown>): GuestNic[] {
  const nics: GuestNic[] = [];
  for (const [key, value] of Object.entries(config)) {
    if (!/^net\d+$/.test(key) || typeof value !== 'string') continue;
    try {
      nics.push(type === 'qemu' ? parseQemuNic(key, value) : parseLxcNic(key, value));
    } catch {
      // a value PVE itself would refuse; not ours to read
    }
  }
  return nics.sort((a, b) => a.index - b.index);
}

/** The host-side device of a guest's NIC, as PVE names it: `tap<vmid>i<n>` (QEMU) or `veth<vmid>i<n>` (LXC). */
export function hostDevice(type: 'qemu' | 'lxc', vmid: number, index: number): string {
  return `${type === 'qemu' ? 'tap' : 'veth'}${vmid}i${index}`;
}
