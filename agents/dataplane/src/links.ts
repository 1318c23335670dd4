/**
 * Interfaces through `ip -j` (argument arrays, never a shell string), as every dataplane-backed
 * driver needs them: the links of a namespace with their addresses, the host-side veth of an
 * instance's interface, a link's alias (how a driver marks an interface as its own without
 * remembering it), and the clean-up of links and of the dataplane's orphaned ifb devices.
 */
import { run, type ExecTarget } from '@gatehouse/sdk';
import { SHAPING_TAGS, ifbName } from './tc.js';

/** A link as `ip -j [-d] link|addr show` prints it (the fields drivers use). */
export interface Link {
  ifindex: number;
  ifname: string;
  address?: string;
  link_index?: number;
  ifalias?: string;
  /** The bridge the link is a port of. */
  master?: string;
  linkinfo?: { info_kind?: string };
  addr_info?: { family: string; local: string; prefixlen: number; scope: string }[];
}

/**
 * Links with their addresses in a namespace. `missingOk`: empty when the namespace (or `ip`
 * inside it) is not there, for namespaces that come and go with their instances.
 */
export async function listLinks(target: ExecTarget, options: { missingOk?: boolean } = {}): Promise<Link[]> {
  try {
    return JSON.parse(await run('ip', ['-j', '-d', 'addr', 'show'], target)) as Link[];
  } catch (err) {
    if (options.missingOk) return [];
    throw err;
  }
}

/** The host-side veth whose peer is `inside`, an interface of an instance's namespace. */
export function hostPeer(inside: Link, hostLinks: readonly Link[]): Link | undefined {
  if (inside.linkinfo?.info_kind !== 'veth' || inside.link_index === undefined) return undefined;
  return hostLinks.find((h) => h.ifindex === inside.link_index && h.linkinfo?.info_kind === 'veth');
}

/** Addresses of a link in CIDR form, without link-local ones. */
export function linkCidrs(link: Link): string[] {
  return (link.addr_info ?? []).filter((a) => a.scope !== 'link' && a.scope !== 'host').map((a) => `${a.local}/${a.prefixlen}`);
}

/** Sets (or clears, with '') a link's alias when it differs; returns whether it changed. */
export async function setAlias(target: ExecTarget, link: Link, alias: string): Promise<boolean> {
  if ((link.ifalias ?? '') === alias) return false;
  await run('ip', ['link', 'set', 'dev', link.ifname, 'alias', alias], target);
  return true;
}

/** Deletes a link; succeeds when it is already gone. */
export async function deleteLink(target: ExecTarget, name: string): Promise<void> {
  await run('ip', ['link', 'del', name], target).catch(() => undefined);
}

/**
 * Deletes the dataplane's ifb devices whose interface is gone. An instance's re-created veth
 * (a restarted container) takes its qdiscs with it, but the ifb that carried its egress shaping is
 * a device of its own and would stay forever; ifb names are a hash of the interface name, so an
 * ifb none of the present interfaces hashes to is an orphan.
 */
export async function removeOrphanIfbs(target: ExecTarget, links: readonly Link[]): Promise<boolean> {
  const expected = new Set(links.map((l) => ifbName(l.ifname)));
  let changed = false;
  for (const link of links) {
    if (!link.ifname.startsWith(SHAPING_TAGS.ifbPrefix) || link.linkinfo?.info_kind !== 'ifb' || expected.has(link.ifname)) continue;
    await deleteLink(target, link.ifname);
    changed = true;
  }
  return changed;
}
