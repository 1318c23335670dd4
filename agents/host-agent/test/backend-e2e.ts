/**
 * What the end-to-end tests of backend plugins (Docker, LXD, Proxmox, ESXi) share: an HTTP probe
 * and an iperf3 rate from a namespace, mutation payloads, a driver's capabilities as GraphQL shows
 * them, and the controller queries they watch (instances of a host, the host's agent status and
 * driver, a forward's status, audit entries).
 */
import type { DriverCapabilities } from '@gatehouse/sdk';
import type { LabNamespace, Outcome } from '@gatehouse/sdk/testkit';
import { expect } from 'vitest';
import { gql, until } from './support.js';

export const ERR = '... on Error { code message field value }';
/** The actor of what the controller does on its own (discovery). */
export const SYSTEM_ACTOR = '00000000-0000-0000-0000-000000000000';
export const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';

/**
 * An HTTP GET from a namespace (node in it, the code as an argument): `got:<body>` for a 200,
 * `refused`, `timeout` (dropped), or `error:...`.
 */
export async function httpOutcome(from: LabNamespace, url: string, timeoutMs = 800): Promise<Outcome> {
  const code = `let done=false;const out=s=>{if(!done){done=true;console.log(s)}};
const r=require('http').get(${JSON.stringify(url)},{timeout:${timeoutMs}},res=>{let d='';res.setEncoding('utf8');res.on('data',b=>d+=b);res.on('end',()=>out(res.statusCode===200?'got:'+d:'error:http '+res.statusCode))});
r.on('timeout',()=>{out('timeout');r.destroy()});
r.on('error',e=>out(['ECONNREFUSED','EHOSTUNREACH','ECONNRESET'].includes(e.code)?'refused':'error:'+e.code));`;
  return (await from.exec(process.execPath, ['-e', code])).replace(/\n$/, '') as Outcome;
}

/** The rate iperf3 measures from `from` to host:port over `seconds` (its first second left out); `reverse`: the server sends. */
export async function iperf3Rate(from: LabNamespace, host: string, port: number, seconds: number, reverse = false): Promise<number> {
  const args = ['-c', host, '-p', String(port), '-t', String(seconds), '-O', '1', '-J', ...(reverse ? ['-R'] : [])];
  const out = await from.exec('iperf3', args, { timeoutMs: 30_000 });
  return (JSON.parse(out) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second;
}

/** An IPv4 address as a number. */
export const v4 = (address: string) => address.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);

/** The selection of `Host.driver` the tests compare with a plugin's capabilities. */
export const DRIVER_SELECTION = `driver { id apiVersion capabilities {
  nics { max hotplug staticAddressing }
  portForwards { implementation protocols portRanges ipv6 sourceAllowLists }
  firewall { implementation directions actions priorities ipv6 icmp }
  shaping { implementation ingress egress burst } } }`;

/** A driver's capabilities as GraphQL shows them: the SDK's lower-case values are the enums' upper-case ones. */
export function capabilitiesInGraphql(capabilities: DriverCapabilities): unknown {
  const convert = (value: unknown): unknown =>
    typeof value === 'string'
      ? value.toUpperCase()
      : Array.isArray(value)
        ? value.map(convert)
        : value && typeof value === 'object'
          ? Object.fromEntries(Object.entries(value).map(([k, v]) => [k, convert(v)]))
          : value;
  return convert(capabilities);
}

/** The payload field of a mutation's answer; an Error answer fails the test with its code and message. */
export function payload<T = any>(answer: Record<string, any>, field: string): T {
  if (answer?.[field] === undefined) throw new Error(`expected a payload with ${field}, got ${JSON.stringify(answer)}`);
  return answer[field] as T;
}

/** An instance as the tests read it. */
export interface InstanceView {
  id: string;
  name: string;
  externalId: string | null;
  owner: { name: string } | null;
  nics: { id: string; name: string; mac: string; network: string; addresses: { id: string; address: string; cidr: string; pool: { id: string } }[] }[];
}

/** A host's agent status as the tests read it. */
export interface HostAgentView {
  desiredRevision: number;
  agent: {
    online: boolean;
    appliedRevision: number | null;
    lastError: string | null;
    discoveredAt: string | null;
    discoveredInstances: { externalId: string; name: string; nics: { name: string; mac: string; addresses: string[] }[] }[];
  };
}

/** The queries of one host, through the API with an admin token; `url` and `hostId` are read when called. */
export function controllerQueries(target: () => { url: string; secret: string; hostId: string }) {
  const api = <T = any>(query: string, variables?: Record<string, unknown>) => gql<T>(target().url, target().secret, query, variables);
  const hostAgent = async () =>
    (
      await api(
        `query ($id: ID!) { host(id: $id) { desiredRevision agent { online appliedRevision lastError discoveredAt discoveredInstances { externalId name nics { name mac addresses } } } } }`,
        { id: target().hostId },
      )
    ).host as HostAgentView;
  return {
    api,
    hostAgent,
    instances: async () =>
      (
        await api(
          `query ($h: ID!) { instances(hostId: $h) { edges { node { id name externalId owner { name } nics { id name mac network addresses { id address cidr pool { id } } } } } } }`,
          { h: target().hostId },
        )
      ).instances.edges.map((e: { node: InstanceView }) => e.node) as InstanceView[],
    /** Resolves the agent status once the agent applied the host's desired revision (undefined after 20 s). */
    converged: () =>
      until(async () => {
        const h = await hostAgent();
        return h.agent.appliedRevision === h.desiredRevision && h.agent.online ? h : undefined;
      }, 20_000),
    forwardStatus: async (id: string) =>
      (await api(`query ($id: ID!) { portForward(id: $id) { status statusError } }`, { id })).portForward as {
        status: string;
        statusError: string | null;
      } | null,
    /** The statuses of an instance's bandwidth limits. */
    bandwidthStatus: async (instanceId: string) =>
      (await api(`query ($id: ID!) { instance(id: $id) { bandwidth { status } } }`, { id: instanceId })).instance.bandwidth.map(
        (b: { status: string }) => b.status,
      ) as string[],
    /** Expects an audit entry of `action` on the object, by the system actor (what the controller did on its own). */
    expectSystemAudit: async (objectId: string, action: string) => {
      const entries = (
        await api(`query ($id: String!) { auditLog(objectId: $id, first: 100) { edges { node { action actorUserId } } } }`, { id: objectId })
      ).auditLog.edges.map((e: { node: { action: string; actorUserId: string | null } }) => e.node);
      expect(
        entries.find((e: { action: string }) => e.action === action),
        `${action} of ${objectId} in ${JSON.stringify(entries.map((e: { action: string }) => e.action))}`,
      ).toMatchObject({ actorUserId: SYSTEM_ACTOR });
    },
    audit: async (objectId: string) =>
      (
        await api(`query ($id: String!) { auditLog(objectId: $id, first: 100) { edges { node { action actorUserId objectType after } } } }`, { id: objectId })
      ).auditLog.edges.map((e: { node: unknown }) => e.node) as { action: string; actorUserId: string | null; objectType: string; after: unknown }[],
  };
}
