/**
 * Interfaces on the host (where dockerd puts its bridges and veths) and inside containers, through
 * `ip -j` and `nsenter` with argument arrays. A container's NIC is found by its MAC inside the
 * container's network namespace; its `link_index` is the ifindex of the host-side veth, looked up
 * again on every call because Docker gives a restarted container new veths.
 *
 * What this plugin marks as its own carries a tag derived from Gatehouse ids (12 hex digits of a
 * sha256): the alias `gatehouse-<instance>-<nic>` on Docker network endpoints it connected, and the
 * interface alias `gatehouse <instance> <nic>` on host-side veths it shapes.
 */
import { createHash } from 'node:crypto';
import { SHAPING_TAGS, ifbName, type Link } from '@gatehouse/dataplane';
import { run, type ExecTarget } from '@gatehouse/sdk';

/** 12 hex digits naming a Gatehouse id in Docker aliases and interface aliases. */
export function tag(id: string): string {
  return createHash('sha256').update(id).digest('hex').slice(0, 12);
}

/** The endpoint alias marking a network connection this plugin made for one NIC. */
export function endpointAlias(instanceId: string, nicId: string): string {
  return `gatehouse-${tag(instanceId)}-${tag(nicId)}`;
}

/** The instance tag of an endpoint alias of ours, or undefined. */
export function aliasInstanceTag(alias: string): string | undefined {
  return /^gatehouse-([0-9a-f]{12})-[0-9a-f]{12}$/.exec(alias)?.[1];
}

/** The interface alias marking a host-side veth this plugin shapes. */
export function vethAlias(instanceId: string, nicId: string): string {
  return `gatehouse ${tag(instanceId)} ${tag(nicId)}`;
}

/** The instance tag of a veth alias of ours, or undefined. */
export function vethAliasInstanceTag(alias: string | undefined): string | undefined {
  return /^gatehouse ([0-9a-f]{12}) [0-9a-f]{12}$/.exec(alias ?? '')?.[1];
}

/** Links with addresses on the host (dockerd's network namespace). */
export async function hostLinks(host: ExecTarget): Promise<Link[]> {
  return JSON.parse(await run('ip', ['-j', '-d', 'addr', 'show'], host)) as Link[];
}

/**
 * Links inside a running container, through its init process's network namespace (the path under
 * /proc is valid from any namespace); empty when the process is gone (the container stopped).
 */
export async function containerLinks(pid: number): Promise<Link[]> {
  try {
    return JSON.parse(await run('nsenter', [`--net=/proc/${pid}/ns/net`, 'ip', '-j', '-d', 'addr', 'show'])) as Link[];
  } catch {
    return [];
  }
}

/** The host-side veth of a container's interface. */
export function hostPeer(inside: Link, host: readonly Link[]): Link | undefined {
  if (inside.link_index === undefined) return undefined;
  return host.find((l) => l.ifindex === inside.link_index && l.linkinfo?.info_kind === 'veth');
}

/** Addresses of a link in CIDR form, without link-local ones. */
export function cidrs(link: Link): string[] {
  return (link.addr_info ?? []).filter((a) => a.scope !== 'link' && a.scope !== 'host').map((a) => `${a.local}/${a.prefixlen}`);
}

/** Sets (or clears, with '') a link's alias when it differs; returns whether it changed. */
export async function setAlias(host: ExecTarget, link: Link, alias: string): Promise<boolean> {
  if ((link.ifalias ?? '') === alias) return false;
  await run('ip', ['link', 'set', 'dev', link.ifname, 'alias', alias], host);
  return true;
}

/**
 * Deletes the dataplane's ifb devices whose interface is gone. A restarted container's old veth
 * disappears with its qdiscs, but the ifb that carried its egress shaping is a device of its own
 * and would stay forever; ifb names are a hash of the interface name, so an ifb none of the
 * present interfaces hashes to is an orphan.
 */
export async function removeOrphanIfbs(host: ExecTarget, links: readonly Link[]): Promise<boolean> {
  const expected = new Set(links.map((l) => ifbName(l.ifname)));
  let changed = false;
  for (const link of links) {
    if (!link.ifname.startsWith(SHAPING_TAGS.ifbPrefix) || link.linkinfo?.info_kind !== 'ifb' || expected.has(link.ifname)) continue;
    await run('ip', ['link', 'del', link.ifname], host).catch(() => undefined);
    changed = true;
  }
  return changed;
}
