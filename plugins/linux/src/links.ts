/**
 * Interfaces and network namespaces through `ip -j` (argument arrays, never a shell string): what
 * exists, the host-side peer of an instance's veth, and the veth pairs and bridges this plugin
 * creates. Everything created is recognisable: host-side veths are `ghv` + a hash of the instance
 * id + the NIC's index, bridges carry the alias `gatehouse`.
 */
import { createHash } from 'node:crypto';
import type { Link } from '@gatehouse/dataplane';
import { run, type ExecTarget } from '@gatehouse/sdk';

/** Prefix of the host-side veths this plugin creates. */
export const VETH_PREFIX = 'ghv';
/** Alias marking a bridge this plugin created. */
export const BRIDGE_ALIAS = 'gatehouse';

/** The 9 hex characters that name an instance's host-side veths. */
export function instanceTag(instanceId: string): string {
  return createHash('sha256').update(instanceId).digest('hex').slice(0, 9);
}

/** Host-side name of an instance's NIC number `index` (at most 15 characters). */
export function hostVethName(instanceId: string, index: number): string {
  return `${VETH_PREFIX}${instanceTag(instanceId)}${index.toString(36).padStart(2, '0')}`;
}

/** Links (with addresses) in a namespace; empty when it does not exist. */
export async function links(target: ExecTarget): Promise<Link[]> {
  try {
    return JSON.parse(await run('ip', ['-j', '-d', 'addr', 'show'], target)) as Link[];
  } catch {
    return [];
  }
}

/** Names of all network namespaces. */
export async function namespaces(): Promise<string[]> {
  const out = (await run('ip', ['-j', 'netns', 'list'])).trim();
  return out ? (JSON.parse(out) as { name: string }[]).map((n) => n.name) : [];
}

/** The host-side interface whose peer is `link` of an instance namespace. */
export function peerOf(link: Link, hostLinks: readonly Link[]): Link | undefined {
  if (link.linkinfo?.info_kind !== 'veth' || link.link_index === undefined) return undefined;
  return hostLinks.find((h) => h.ifindex === link.link_index && h.linkinfo?.info_kind === 'veth');
}

/** Addresses of a link in CIDR form, without link-local ones. */
export function cidrs(link: Link): string[] {
  return (link.addr_info ?? []).filter((a) => a.scope !== 'link' && a.scope !== 'host').map((a) => `${a.local}/${a.prefixlen}`);
}

/** Creates a veth pair: `hostName` in the host namespace, `name` with `mac` in the instance's. */
export async function createVeth(host: ExecTarget, hostName: string, instanceNetns: string, name: string, mac: string): Promise<void> {
  await run('ip', ['link', 'add', hostName, 'type', 'veth', 'peer', 'name', name, 'address', mac, 'netns', instanceNetns], host);
  await run('ip', ['link', 'set', hostName, 'up'], host);
  await run('ip', ['link', 'set', name, 'up'], { netns: instanceNetns });
}

/** Makes sure a bridge exists (created with the gatehouse alias when missing) and holds `gateways`. */
export async function ensureBridge(host: ExecTarget, bridge: string, gateways: readonly string[]): Promise<boolean> {
  const existing = (await links(host)).find((l) => l.ifname === bridge);
  let changed = false;
  if (!existing) {
    await run('ip', ['link', 'add', bridge, 'type', 'bridge'], host);
    await run('ip', ['link', 'set', bridge, 'alias', BRIDGE_ALIAS], host);
    await run('ip', ['link', 'set', bridge, 'up'], host);
    changed = true;
  }
  const have = new Set(existing ? cidrs(existing) : []);
  for (const gateway of gateways) {
    if (have.has(gateway)) continue;
    await run('ip', [...(gateway.includes(':') ? ['-6'] : []), 'addr', 'replace', gateway, 'dev', bridge, ...(gateway.includes(':') ? ['nodad'] : [])], host);
    changed = true;
  }
  return changed;
}

/** Deletes a link; succeeds when it is already gone. */
export async function deleteLink(target: ExecTarget, name: string): Promise<void> {
  await run('ip', ['link', 'del', name], target).catch(() => undefined);
}
