/**
 * What the end-to-end tests of backend plugins (Docker, LXD) share: an HTTP probe from a
 * namespace, mutation payloads, and the controller queries they watch (instances of a host, the
 * host's agent status, a forward's status, audit entries).
 */
import type { LabNamespace, Outcome } from '@gatehouse/sdk/testkit';
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
    audit: async (objectId: string) =>
      (
        await api(`query ($id: String!) { auditLog(objectId: $id, first: 100) { edges { node { action actorUserId objectType after } } } }`, { id: objectId })
      ).auditLog.edges.map((e: { node: unknown }) => e.node) as { action: string; actorUserId: string | null; objectType: string; after: unknown }[],
  };
}
