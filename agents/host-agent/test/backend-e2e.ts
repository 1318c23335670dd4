/**
 * What the end-to-end tests of backend plugins (Docker, LXD, Proxmox, ESXi) share: an HTTP probe
 * and an iperf3 rate from a namespace, mutation payloads, a driver's capabilities as GraphQL shows
 * them, the controller queries they watch (instances of a host, the host's agent status and
 * driver, a forward's status, audit entries), and the controller and plugin agent of a suite
 * (`BackendRun`).
 */
import type { DriverCapabilities } from '@gatehouse/sdk';
import { eventually, type LabNamespace, type Outcome } from '@gatehouse/sdk/testkit';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import { gql, startController, startPluginAgent, until, type Proc } from './support.js';

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

/**
 * The rate iperf3 measures from `from` to host:port over `seconds` (its first second left out;
 * `reverse`: the server sends): `goodput`, the TCP payload's bits per second, and `wire`, the bits
 * per second of the frames carrying it (each full segment of `mss` payload bytes with 66 bytes of
 * TCP with timestamps, IP and Ethernet headers), which is what a shaper on the link counts.
 */
export async function iperf3Rate(from: LabNamespace, host: string, port: number, seconds: number, reverse = false): Promise<{ goodput: number; wire: number }> {
  const args = ['-c', host, '-p', String(port), '-t', String(seconds), '-O', '1', '-J', ...(reverse ? ['-R'] : [])];
  const out = JSON.parse(await from.exec('iperf3', args, { timeoutMs: 30_000 })) as {
    start: { tcp_mss_default?: number };
    end: { sum_received: { bits_per_second: number } };
  };
  const goodput = out.end.sum_received.bits_per_second;
  const mss = out.start.tcp_mss_default ?? 1448;
  return { goodput, wire: (goodput * (mss + 66)) / mss };
}

/** How a measured rate reads in a test's log: payload and frames, and the frames' share of the limit. */
export const describeRate = (r: { goodput: number; wire: number }, limit: number) =>
  `payload ${Math.round(r.goodput)} bit/s, frames ${Math.round(r.wire)} bit/s (${(r.wire / limit).toFixed(3)} of the limit)`;

/** An IPv4 address as a number. */
export const v4 = (address: string) => address.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);

/** The selection of `Host.driver` the tests compare with a plugin's capabilities. */
export const DRIVER_SELECTION = `driver { id apiVersion capabilities {
  nics { max hotplug staticAddressing }
  portForwards { implementation protocols portRanges ipv6 sourceAllowLists rateLimits multiTarget }
  firewall { implementation directions actions priorities ipv6 icmp }
  shaping { implementation ingress egress burst } } }`;

/**
 * A driver's capabilities as GraphQL shows them: the SDK's lower-case values are the enums' upper-case
 * ones, and an optional capability a driver does not declare (rate limits, several targets) shows as false.
 */
export function capabilitiesInGraphql(capabilities: DriverCapabilities): unknown {
  return upperCased({ ...capabilities, portForwards: { rateLimits: false, multiTarget: false, ...capabilities.portForwards } });
}

function upperCased(capabilities: unknown): unknown {
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

/** What a backend's end-to-end test gives the shared steps below. */
export interface BackendScenario {
  queries: ReturnType<typeof controllerQueries>;
  /** The registered instance. */
  instanceId: () => string;
  /** One attempt through the first forward (public port 18080) from the client namespace. */
  throughForward: () => Promise<Outcome>;
  /** The body the instance's TCP server answers. */
  body: string;
  /** The nftables table on the host, for what must be gone after a reclaim. */
  table: () => Promise<string>;
}

/** Creates a TCP forward to the instance and returns its id. */
export async function createForward(s: BackendScenario, hostPort: number, targetPort: number): Promise<string> {
  const f = await s.queries.api(
    `mutation ($id: ID!, $h: String!, $t: String!) { createPortForward(input: { instanceId: $id, protocol: TCP, hostPort: $h, targetPort: $t }) { ... on CreatePortForwardPayload { portForward { id } } ${ERR} } }`,
    { id: s.instanceId(), h: String(hostPort), t: String(targetPort) },
  );
  return payload(f.createPortForward, 'portForward').id;
}

/** Creates a firewall rule on the instance (inbound, TCP port 8080) and returns its id. */
async function addRule(s: BackendScenario, action: 'DROP' | 'ALLOW', priority: number): Promise<string> {
  const rule = await s.queries.api(
    `mutation ($id: ID!, $a: FirewallAction!, $p: Int!) { addFirewallRule(input: { instanceId: $id, direction: INBOUND, protocol: TCP, ports: "8080", action: $a, priority: $p }) { ... on AddFirewallRulePayload { rule { id } } ${ERR} } }`,
    { id: s.instanceId(), a: action, p: priority },
  );
  return payload(rule.addFirewallRule, 'rule').id;
}

/**
 * An inbound DROP rule on port 8080 blocks the forward, deleting it lets traffic through again;
 * returns the id of an ALLOW rule left in place for the reclaim.
 */
export async function checkFirewallBlocks(s: BackendScenario): Promise<string> {
  const dropId = await addRule(s, 'DROP', 10);
  expect(await until(async () => (await s.throughForward()) === 'timeout')).toBe(true);
  await s.queries.converged();
  expect(await s.throughForward()).toBe('timeout');
  const deleted = await s.queries.api(`mutation ($id: ID!) { deleteFirewallRule(input: { ruleId: $id }) { __typename ${ERR} } }`, { id: dropId });
  expect(deleted.deleteFirewallRule.__typename).toBe('DeleteFirewallRulePayload');
  expect(await eventually(s.throughForward, 15_000)).toBe(`got:${s.body}`);
  const kept = await addRule(s, 'ALLOW', 20);
  await s.queries.converged();
  expect(await s.throughForward()).toBe(`got:${s.body}`);
  return kept;
}

/**
 * The instance deleted on the backend by `destroy` is reclaimed by the controller on its own:
 * instance, `forwards`, a web proxy made here, the rule `ruleId` and its two addresses are gone,
 * with audit entries by the system actor, and nothing of it stays in the host's table.
 */
export async function checkReclaimed(
  s: BackendScenario,
  { forwards, ruleId, destroy, label, withinMs }: { forwards: string[]; ruleId: string; destroy: () => Promise<void>; label: string; withinMs: number },
): Promise<void> {
  const { api, instances, forwardStatus, expectSystemAudit, converged } = s.queries;
  const id = s.instanceId();
  const proxy = await api(
    `mutation ($id: ID!) { createWebProxy(input: { instanceId: $id, domain: "web.reclaim-e2e.test", targetPort: 8080, tlsMode: NONE }) { ... on CreateWebProxyPayload { webProxy { id } } ${ERR} } }`,
    { id },
  );
  const proxyId = payload(proxy.createWebProxy, 'webProxy').id as string;
  const before = (await instances()).find((i) => i.id === id)!;
  const addressIds = before.nics.flatMap((n) => n.addresses.map((a) => a.id));
  expect(addressIds).toHaveLength(2);
  expect(await s.throughForward()).toBe(`got:${s.body}`);

  await destroy();
  const removed = Date.now();
  expect(await until(async () => !(await instances()).some((i) => i.id === id), withinMs)).toBe(true);
  console.log(`[${label}] deleted instance reclaimed ${Date.now() - removed} ms after its deletion`);

  for (const f of forwards) expect(await forwardStatus(f)).toBeNull();
  expect((await api(`query ($id: ID!) { webProxy(id: $id) { id } }`, { id: proxyId })).webProxy).toBeNull();
  expect(await s.throughForward()).not.toMatch(/^got:/);
  await expectSystemAudit(id, 'instance.delete');
  for (const f of forwards) await expectSystemAudit(f, 'portForward.delete');
  await expectSystemAudit(proxyId, 'webProxy.delete');
  await expectSystemAudit(ruleId, 'firewallRule.delete');
  for (const n of before.nics) await expectSystemAudit(n.id, 'nic.delete');
  for (const a of addressIds) await expectSystemAudit(a, 'address.reclaim');
  expect(
    await until(async () => {
      const table = await s.table().catch(() => '');
      return !/18080|15201/.test(table) && !/fw_(in|out)_/.test(table);
    }),
  ).toBe(true);
  expect((await converged())?.agent.lastError).toBeNull();
}

/**
 * Creates a host running `backend` with its pools (the first the default), and an agent token for
 * it; returns their ids and the token's secret.
 */
export async function createBackendHost(
  api: ReturnType<typeof controllerQueries>['api'],
  backend: string,
  publicAddress: string,
  pools: { name: string; network: string; cidr: string; start: string; end: string; gateway: string }[],
): Promise<{ hostId: string; poolIds: string[]; token: string }> {
  const poolIds: string[] = [];
  for (const p of pools) {
    const pool = await api(`mutation ($input: CreateIpPoolInput!) { createIpPool(input: $input) { ... on CreateIpPoolPayload { pool { id } } ${ERR} } }`, {
      input: { ...p, kind: 'PRIVATE' },
    });
    poolIds.push(payload(pool.createIpPool, 'pool').id);
  }
  const h = await api(
    `mutation ($b: BackendId!, $a: [String!]!) { createHost(input: { name: "${backend}-host", backend: $b, publicAddresses: $a }) { ... on CreateHostPayload { host { id } } ${ERR} } }`,
    { b: backend, a: [publicAddress] },
  );
  const hostId = payload(h.createHost, 'host').id as string;
  const updated = await api(
    `mutation ($h: ID!, $p: ID!) { updateHost(input: { hostId: $h, defaultPoolId: $p }) { ... on UpdateHostPayload { host { defaultPoolId } } ${ERR} } }`,
    { h: hostId, p: poolIds[0] },
  );
  expect(payload(updated.updateHost, 'host').defaultPoolId).toBe(poolIds[0]);
  const t = await api(
    `mutation ($hostId: ID!) { createApiToken(input: { name: "agent", scope: AGENT, hostId: $hostId }) { ... on CreateApiTokenPayload { created { secret } } ${ERR} } }`,
    { hostId },
  );
  return { hostId, poolIds, token: payload(t.createApiToken, 'created').secret };
}

/** Runs the clean-up steps in order, each even when one before failed; throws the first failure. */
export async function cleanUpInOrder(steps: (() => Promise<unknown> | unknown)[]): Promise<void> {
  let first: unknown;
  for (const step of steps) {
    try {
      await step();
    } catch (err) {
      first ??= err;
    }
  }
  if (first !== undefined) throw first;
}

type PoolInput = Parameters<typeof createBackendHost>[3][number];

/**
 * A backend suite's controller (PGlite in a temporary data directory) and its plugin's agent. The
 * controller serves no web proxies (no Caddy on the machine's ports 80/443): a proxy the suite
 * creates stays PENDING, which is all the reclaim needs.
 */
export class BackendRun {
  readonly dataDir: string;
  controller: { proc: Proc; url: string } | undefined;
  agent: Proc | undefined;
  admin = '';
  hostId = '';
  poolIds: string[] = [];
  readonly queries = controllerQueries(() => ({ url: this.controller!.url, secret: this.admin, hostId: this.hostId }));
  private proxySetting: string | undefined;

  constructor(private readonly backend: string) {
    this.dataDir = mkdtempSync(join(tmpdir(), `gatehouse-${backend}-e2e-`));
  }

  /** Starts the controller, creates the host with its pools (the first its default) and an agent token, starts the agent and waits until it has converged. */
  async start(publicAddress: string, pools: PoolInput[], pluginConfig: Record<string, unknown>, discoverMs: number): Promise<void> {
    this.proxySetting = process.env.GATEHOUSE_PROXY;
    process.env.GATEHOUSE_PROXY = 'off';
    const controller = await startController(this.dataDir);
    this.controller = controller;
    this.admin = controller.bootstrapSecret!;
    const created = await createBackendHost(this.queries.api, this.backend, publicAddress, pools);
    this.hostId = created.hostId;
    this.poolIds = created.poolIds;
    this.agent = startPluginAgent(controller.url, created.token, this.backend, pluginConfig, discoverMs);
    expect((await this.queries.converged())?.agent).toMatchObject({ online: true, lastError: null });
  }

  /** With GATEHOUSE_E2E_LOGS set, prints the end of the agent's and the controller's output. */
  printLogs(): void {
    if (!process.env.GATEHOUSE_E2E_LOGS) return;
    console.log(`--- agent\n${this.agent?.output().slice(-6000)}`);
    console.log(`--- controller\n${this.controller?.proc.output().slice(-6000)}`);
  }

  /** Clean-up steps that stop the agent, then the controller (before the lab goes). */
  stopSteps(): (() => unknown)[] {
    return [() => this.agent?.stop(), () => this.controller?.proc.stop('SIGKILL')];
  }

  /** Clean-up steps that remove the data directory and restore the environment (after the lab). */
  removeSteps(): (() => unknown)[] {
    return [
      () => rmSync(this.dataDir, { recursive: true, force: true }),
      () => (this.proxySetting === undefined ? delete process.env.GATEHOUSE_PROXY : (process.env.GATEHOUSE_PROXY = this.proxySetting)),
    ];
  }
}
