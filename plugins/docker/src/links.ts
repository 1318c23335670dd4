/**
 * Interfaces inside containers, through `nsenter` and `ip -j` with argument arrays. A container's
 * NIC is found by its MAC inside the container's network namespace; its host-side veth (the
 * dataplane's `hostPeer`) is looked up again on every call because Docker gives a restarted
 * container new veths.
 *
 * What this plugin marks as its own carries a tag derived from Gatehouse ids (12 hex digits of a
 * sha256): the alias `gatehouse-<instance>-<nic>` on Docker network endpoints it connected, and the
 * interface alias `gatehouse <instance> <nic>` on host-side veths it shapes.
 */
import { createHash } from 'node:crypto';
import type { Link } from '@gatehouse/dataplane';
import { run } from '@gatehouse/sdk';

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
