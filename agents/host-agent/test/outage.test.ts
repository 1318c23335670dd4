/**
 * Fail safe, not fail open, as root with real processes: a controller (`gatehouse serve`), the
 * agent process with the Linux plugin and a state directory, and the lab's host, client and
 * instance namespaces. With the controller stopped, the agent is restarted onto a flushed ruleset
 * (what a reboot leaves: `nft flush ruleset` in the lab's host namespace only) five times: each
 * time the forward passes traffic again and the firewall drops what it dropped, from the cache,
 * within 2 s of the agent starting to apply it (the time from process start, Node's own start and
 * the plugin's load included, is printed too), the controller still down; a flush while the agent runs is repaired too. The
 * recovery times (median, max) are printed. Then the controller comes back and the agent
 * converges to what changed meanwhile, and says it started from its cache.
 */
import { NetnsLab, labAvailable, tcpOutcome, tcpServer, type LabNamespace, type LabServer } from '@gatehouse/sdk/testkit';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gql, startAgent, startController, until, type Proc } from './support.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await labAvailable();

const ERR = '... on Error { code message field value }';
const RUNS = 5;

/** Median and max of a list of milliseconds. */
function summary(ms: number[]): { median: number; max: number } {
  const sorted = [...ms].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { median: Math.round(median), max: Math.round(sorted.at(-1)!) };
}

describe.skipIf(!available && !REQUIRE_SYSTEM)('host agent with the controller down', () => {
  const lab = new NetnsLab();
  const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-outage-'));
  const stateDir = join(mkdtempSync(join(tmpdir(), 'gatehouse-outage-state-')), 'agent');
  let controller: { proc: Proc; url: string };
  let admin: string;
  let host: LabNamespace;
  let client: LabNamespace;
  let vm: LabNamespace;
  let hostId: string;
  let instanceId: string;
  let token: string;
  let agent: Proc;
  const procs: Proc[] = [];
  const servers: LabServer[] = [];
  const api = <T = any>(query: string, variables?: Record<string, unknown>) => gql<T>(controller.url, admin, query, variables);
  const agentArgs = () => [
    '--controller',
    controller.url,
    '--plugin',
    'linux',
    '--host',
    hostId,
    '--plugin-config',
    JSON.stringify({ hostNetns: host.name, namespacePrefix: `${lab.prefix}-vm` }),
    '--drift-interval',
    '300',
    '--state-dir',
    stateDir,
  ];
  const launch = () => {
    agent = startAgent(agentArgs(), token);
    procs.push(agent);
    return agent;
  };
  const hostAgent = async () =>
    (await api(`query ($id: ID!) { host(id: $id) { desiredRevision agent { online appliedRevision lastError startedFrom cachedRevision } } }`, { id: hostId }))
      .host as { desiredRevision: number; agent: { online: boolean; appliedRevision: number | null; lastError: string | null; startedFrom: string | null; cachedRevision: number | null } };
  const forward = async (hostPort: number, targetPort: number) =>
    (
      await api(
        `mutation ($id: ID!, $hp: String!, $tp: String!) { createPortForward(input: { instanceId: $id, protocol: TCP, hostPort: $hp, targetPort: $tp }) { ... on CreatePortForwardPayload { portForward { id } } ${ERR} } }`,
        { id: instanceId, hp: String(hostPort), tp: String(targetPort) },
      )
    ).createPortForward.portForward.id as string;
  /** Milliseconds from `since` until traffic passes the forward on 18080 (probing every ~100 ms), or null after `ms`. */
  const recovered = async (since: number, ms = 10_000): Promise<number | null> => {
    for (const end = since + ms; performance.now() < end; ) {
      if ((await tcpOutcome(client, '198.51.100.1', 18080, 300)) === 'got:hello from vm1') return performance.now() - since;
    }
    return null;
  };
  const flush = () => host.exec('nft', ['flush', 'ruleset']); // the lab's host namespace only

  beforeAll(async () => {
    host = await lab.namespace('host');
    client = await lab.namespace('cli');
    vm = await lab.namespace('vm1');
    await lab.link(client, '198.51.100.2/24', host, '198.51.100.1/24');
    servers.push(tcpServer(vm, 8080, 'hello from vm1'), tcpServer(vm, 8081, 'second service'));
    const c = await startController(dataDir);
    controller = c;
    admin = c.bootstrapSecret!;
    procs.push(c.proc);
    await api(
      `mutation { createIpPool(input: { name: "outage", kind: PRIVATE, network: "${lab.prefix}br", cidr: "10.79.0.0/24", gateway: "10.79.0.1" }) { __typename } }`,
    );
    hostId = (
      await api(`mutation { createHost(input: { name: "outage-host", backend: LINUX, publicAddresses: ["198.51.100.1"] }) { ... on CreateHostPayload { host { id } } ${ERR} } }`)
    ).createHost.host.id;
    instanceId = (
      await api(
        `mutation ($hostId: ID!, $name: String!) { createInstance(input: { hostId: $hostId, name: "vm1", externalId: $name, nics: [{ network: "${lab.prefix}br" }] }) { ... on CreateInstancePayload { instance { id } } ${ERR} } }`,
        { hostId, name: vm.name },
      )
    ).createInstance.instance.id;
    token = (
      await api(
        `mutation ($hostId: ID!) { createApiToken(input: { name: "agent", scope: AGENT, hostId: $hostId }) { ... on CreateApiTokenPayload { created { secret } } ${ERR} } }`,
        { hostId },
      )
    ).createApiToken.created.secret;
  }, 120_000);

  afterAll(async () => {
    if (process.env.GATEHOUSE_E2E_LOGS) for (const p of procs) console.log(`--- ${p.child.spawnargs.slice(2, 4).join(' ')}\n${p.output().slice(-6000)}`);
    for (const s of servers) s.stop();
    for (const p of procs) await p.stop('SIGKILL');
    await lab.cleanup();
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(join(stateDir, '..'), { recursive: true, force: true });
  }, 60_000);

  it('keeps forwards and firewall through agent restarts onto a flushed ruleset while the controller is down, from its cache, within 2 s', async () => {
    await forward(18080, 8080);
    await forward(18081, 8081);
    // the firewall drops what reaches port 8081: through the forward that is a timeout, without the firewall an answer
    const rule = await api(
      `mutation ($id: ID!) { addFirewallRule(input: { instanceId: $id, direction: INBOUND, protocol: TCP, ports: "8081", action: DROP, priority: 10 }) { ... on AddFirewallRulePayload { rule { id } } ${ERR} } }`,
      { id: instanceId },
    );
    expect(rule.addFirewallRule.rule).toBeTruthy();
    launch();
    const converged = await until(async () => {
      const h = await hostAgent();
      return h.agent.online && h.agent.appliedRevision === h.desiredRevision ? h : undefined;
    }, 30_000);
    expect(converged?.agent).toMatchObject({ startedFrom: 'CONTROLLER', cachedRevision: null, lastError: null });
    const revision = converged!.desiredRevision;
    expect(await recovered(performance.now())).not.toBeNull();
    expect(await tcpOutcome(client, '198.51.100.1', 18081, 500)).toBe('timeout');
    expect(statSync(join(stateDir, 'desired-state.json')).mode & 0o777).toBe(0o600);

    await controller.proc.stop();
    const restarts: number[] = [];
    const applies: number[] = [];
    const repairs: number[] = [];
    for (let run = 1; run <= RUNS; run++) {
      // a reboot, as the data plane sees it: the agent goes, the kernel's ruleset is empty
      await agent.stop();
      await flush();
      expect(await tcpOutcome(client, '198.51.100.1', 18080, 300)).not.toMatch(/^got:/);
      const started = performance.now();
      const a = launch();
      // when the agent, up and its plugin loaded, starts applying its cache (Node's own start is not ours to speed up)
      const applying = a.waitFor(/applying the cached desired state revision/, 30_000).then(() => performance.now());
      const ms = await recovered(started, 30_000);
      expect(ms, `run ${run}: the forward came back from the cache; agent output:\n${a.output().slice(-3000)}`).not.toBeNull();
      restarts.push(ms!);
      applies.push(started + ms! - (await applying));
      // enforced, not open: the dropped port still times out (an answer would mean no firewall)
      expect(await tcpOutcome(client, '198.51.100.1', 18081, 500)).toBe('timeout');
      expect(a.output()).toMatch(new RegExp(`applying the cached desired state revision ${revision} before connecting`));
      expect(controller.proc.child.exitCode ?? controller.proc.child.signalCode).not.toBeNull();

      // flushed again while the agent runs: drift repair from the same state, the controller still down
      await a.waitFor(/"revision":\d+,"changed":/, 10_000); // applied (not mid-apply)
      await flush();
      const flushed = performance.now();
      const repaired = await recovered(flushed);
      expect(repaired, `run ${run}: drift repaired without the controller`).not.toBeNull();
      repairs.push(repaired!);
      expect(await tcpOutcome(client, '198.51.100.1', 18081, 500)).toBe('timeout');
    }
    const restart = summary(restarts);
    const apply = summary(applies);
    const repair = summary(repairs);
    console.log(
      `[outage] controller down, agent restarted onto a flushed ruleset: traffic through the forward again median ${apply.median} ms, max ${apply.max} ms after the agent began applying its cache (${applies.map(Math.round).join(', ')} ms); from process start median ${restart.median} ms, max ${restart.max} ms (${restarts.map(Math.round).join(', ')} ms; load average ${loadavg()[0]!.toFixed(1)} on ${availableParallelism()} cores)`,
    );
    console.log(
      `[outage] controller down, ruleset flushed under the running agent: repaired after median ${repair.median} ms, max ${repair.max} ms (${repairs.map(Math.round).join(', ')} ms)`,
    );
    expect(apply.max).toBeLessThan(2000);
    expect(repair.max).toBeLessThan(2000);
  }, 180_000);

  it('converges to what changed meanwhile when the controller is back, and reports that it started from its cache', async () => {
    const port = Number(new URL(controller.url).port);
    const back = await startController(dataDir, { port, fresh: false });
    controller = back;
    procs.push(back.proc);
    const before = await hostAgent();
    await forward(18082, 8080);
    // the agent's reconnect backoff may have grown to its 30 s cap while the controller was down
    const converged = await until(async () => {
      const h = await hostAgent();
      return h.agent.online && h.agent.appliedRevision === h.desiredRevision && h.desiredRevision > before.desiredRevision ? h : undefined;
    }, 45_000, 250);
    expect(converged?.agent).toMatchObject({ startedFrom: 'CACHE', cachedRevision: before.desiredRevision, lastError: null });
    expect(await tcpOutcome(client, '198.51.100.1', 18082)).toBe('got:hello from vm1');
    expect(await tcpOutcome(client, '198.51.100.1', 18080)).toBe('got:hello from vm1');
    expect(await tcpOutcome(client, '198.51.100.1', 18081, 500)).toBe('timeout');
  }, 90_000);
});
