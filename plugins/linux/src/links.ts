/**
 * Network namespaces through `ip -j` (argument arrays, never a shell string), and the veth pairs
 * and bridges this plugin creates (listing links and finding peers is the dataplane's). Everything
 * created is recognisable: host-side veths are `ghv` + a hash of the instance id + the NIC's
 * index, bridges carry the alias `gatehouse`.
 */
import { createHash } from 'node:crypto';
import { linkCidrs, listLinks } from '@gatehouse/dataplane';
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

/** Names of all network namespaces. */
export async function namespaces(): Promise<string[]> {
  const out = (await run('ip', ['-j', 'netns', 'list'])).trim();
  return out ? (JSON.parse(out) as { name: string }[]).map((n) => n.name) : [];
}

/** Creates a veth pair: `hostName` in the host namespace, `name` with `mac` in the instance's. */
export async function createVeth(host: ExecTarget, hostName: string, instanceNetns: string, name: string, mac: string): Promise<void> {
  await run('ip', ['link', 'add', hostName, 'type', 'veth', 'peer', 'name', name, 'address', mac, 'netns', instanceNetns], host);
  await run('ip', ['link', 'set', hostName, 'up'], host);
  await run('ip', ['link', 'set', name, 'up'], { netns: instanceNetns });
}

/** Makes sure a bridge exists (created with the gatehouse alias when missing) and holds `gateways`. */
export async function ensureBridge(host: ExecTarget, bridge: string, gateways: readonly string[]): Promise<boolean> {
  const existing = (await listLinks(host, { missingOk: true })).find((l) => l.ifname === bridge);
  let changed = false;
  if (!existing) {
    await run('ip', ['link', 'add', bridge, 'type', 'bridge'], host);
    await run('ip', ['link', 'set', bridge, 'alias', BRIDGE_ALIAS], host);
    await run('ip', ['link', 'set', bridge, 'up'], host);
    changed = true;
  }
  const have = new Set(existing ? linkCidrs(existing) : []);
  for (const gateway of gateways) {
    if (have.has(gateway)) continue;
    await run('ip', [...(gateway.includes(':') ? ['-6'] : []), 'addr', 'replace', gateway, 'dev', bridge, ...(gateway.includes(':') ? ['nodad'] : [])], host);
    changed = true;
  }
  return changed;
}
