/**
 * End to end, as root: a real controller process, the host agent with the Linux plugin, a host
 * namespace (the plugin's host) with public address 198.51.100.1, an instance namespace that the
 * plugin gives its NIC, and a client namespace that sends real packets. The test drives only the
 * public GraphQL API — pool, host, instance, forward, firewall rule, bandwidth limit — and watches
 * traffic, object statuses and the host's agent status; then the faults: a flushed ruleset, the
 * agent stopped and killed, the controller restarted, a wrong and a revoked token.
 */
import { NetnsLab, eventually, labAvailable, tcpOutcome, tcpServer, type LabNamespace, type LabServer } from '@gatehouse/sdk/testkit';
import { LinuxDriver } from '@gatehouse/plugin-linux';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HostAgent } from '../src/index.js';
import { gql, startAgent, startController, until, type Proc } from './support.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await labAvailable();

const ERR = '... on Error { code message field value }';

/** The exit code of a process, once it has exited. */
const exitCode = (p: Proc) =>
  new Promise<number | null>((resolve) => (p.child.exitCode !== null ? resolve(p.child.exitCode) : p.child.once('exit', (code) => resolve(code))));

describe.skipIf(!available && !REQUIRE_SYSTEM)('host agent end to end', () => {
  const lab = new NetnsLab();
  const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-e2e-'));
  let controller: { proc: Proc; url: string };
  let admin: string;
  let host: LabNamespace;
  let client: LabNamespace;
  let vm: LabNamespace;
  let hostId: string;
  let instanceId: string;
  let agentToken: { id: string; secret: string };
  let agent: HostAgent | undefined;
  const procs: Proc[] = [];
  const servers: LabServer[] = [];
  const logs: string[] = [];
  const logger = {
    info: (m: string, f?: object) => logs.push(`info ${m} ${JSON.stringify(f ?? {})}`),
    warn: (m: string, f?: object) => logs.push(`warn ${m} ${JSON.stringify(f ?? {})}`),
    error: (m: string, f?: object) => logs.push(`error ${m} ${JSON.stringify(f ?? {})}`),
  };
  const api = <T = any>(query: string, variables?: Record<string, unknown>) => gql<T>(controller.url, admin, query, variables);
  const pluginConfig = () => ({ hostNetns: host.name, namespacePrefix: `${lab.prefix}-vm` });
  const startInProcess = async () => {
    agent = new HostAgent({
      controllerUrl: controller.url,
      token: agentToken.secret,
      driver: new LinuxDriver(pluginConfig()),
      logger,
      driftIntervalMs: 300,
      thoroughEvery: 3,
      backoff: { minMs: 100, maxMs: 1000 },
    });
    await agent.start();
  };
  const hostAgent = async () =>
    (
      await api(
        `query ($id: ID!) { host(id: $id) { desiredRevision agent { online appliedRevision lastError driftRepairs connections discoveredInstances { externalId nics { mac addresses } } } } }`,
        {
          id: hostId,
        },
      )
    ).host as {
      desiredRevision: number;
      agent: {
        online: boolean;
        appliedRevision: number | null;
        lastError: string | null;
        driftRepairs: number;
        discoveredInstances: { externalId: string; nics: { mac: string; addresses: string[] }[] }[];
      };
    };
  const forwardStatus = async (id: string) =>
    (await api(`query ($id: ID!) { portForward(id: $id) { status statusError } }`, { id })).portForward as { status: string; statusError: string | null };
  const converged = () =>
    until(async () => {
      const h = await hostAgent();
      return h.agent.appliedRevision === h.desiredRevision && h.agent.online ? h : undefined;
    });

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
    const pool = await api(
      `mutation { createIpPool(input: { name: "e2e", kind: PRIVATE, network: "${lab.prefix}br", cidr: "10.77.0.0/24", gateway: "10.77.0.1" }) { ... on CreateIpPoolPayload { pool { id } } ${ERR} } }`,
    );
    expect(pool.createIpPool.pool).toBeTruthy();
    const h = await api(
      `mutation { createHost(input: { name: "e2e-host", backend: LINUX, publicAddresses: ["198.51.100.1"] }) { ... on CreateHostPayload { host { id } } ${ERR} } }`,
    );
    hostId = h.createHost.host.id;
    const i = await api(
      `mutation ($hostId: ID!, $name: String!) { createInstance(input: { hostId: $hostId, name: "vm1", externalId: $name, nics: [{ network: "${lab.prefix}br" }] }) { ... on CreateInstancePayload { instance { id nics { mac addresses { cidr } } } } ${ERR} } }`,
      { hostId, name: vm.name },
    );
    instanceId = i.createInstance.instance.id;
    const t = await api(
      `mutation ($hostId: ID!) { createApiToken(input: { name: "agent", scope: AGENT, hostId: $hostId }) { ... on CreateApiTokenPayload { created { secret token { id } } } ${ERR} } }`,
      { hostId },
    );
    agentToken = { id: t.createApiToken.created.token.id, secret: t.createApiToken.created.secret };
  }, 120_000);

  afterAll(async () => {
    if (process.env.GATEHOUSE_E2E_LOGS)
      for (const p of procs)
        console.log(`--- ${p.child.spawnargs.slice(2, 4).join(' ')} (exit ${p.child.exitCode ?? p.child.signalCode})\n${p.output().slice(-6000)}`);
    await agent?.stop();
    for (const s of servers) s.stop();
    for (const p of procs) await p.stop('SIGKILL');
    await lab.cleanup();
    rmSync(dataDir, { recursive: true, force: true });
  }, 60_000);

  it('applies forwards, firewall rules and bandwidth limits created through the API, seen from a client namespace', async () => {
    await startInProcess();
    const f = await api(
      `mutation ($id: ID!) { createPortForward(input: { instanceId: $id, protocol: TCP, hostPort: "18080", targetPort: "8080" }) { ... on CreatePortForwardPayload { portForward { id } } ${ERR} } }`,
      { id: instanceId },
    );
    const forwardId = f.createPortForward.portForward.id as string;
    expect(await eventually(() => tcpOutcome(client, '198.51.100.1', 18080), 15_000)).toBe('got:hello from vm1');
    expect(await until(async () => (await forwardStatus(forwardId)).status === 'APPLIED')).toBe(true);
    const status = await converged();
    expect(status?.agent).toMatchObject({ online: true, lastError: null });
    expect(status!.agent.discoveredInstances.find((d) => d.externalId === vm.name)?.nics[0]?.addresses).toContain('10.77.0.2/24');

    const rule = await api(
      `mutation ($id: ID!) { addFirewallRule(input: { instanceId: $id, direction: INBOUND, protocol: TCP, ports: "8080", action: REJECT, priority: 10 }) { ... on AddFirewallRulePayload { rule { id } } ${ERR} } }`,
      { id: instanceId },
    );
    expect(rule.addFirewallRule.rule).toBeTruthy();
    expect(await until(async () => (await tcpOutcome(client, '198.51.100.1', 18080)) === 'refused')).toBe(true);

    const limit = await api(
      `mutation ($id: ID!) { setBandwidthLimit(input: { instanceId: $id, ingressMbps: 20, egressMbps: 30 }) { ... on SetBandwidthLimitPayload { limit { id status } } ${ERR} } }`,
      { id: instanceId },
    );
    expect(limit.setBandwidthLimit.limit).toBeTruthy();
    await api(
      `mutation ($id: ID!) { createPortForward(input: { instanceId: $id, protocol: TCP, hostPort: "15201", targetPort: "5201" }) { ... on CreatePortForwardPayload { portForward { id } } ${ERR} } }`,
      { id: instanceId },
    );
    await converged();
    const iperf = spawn('ip', ['netns', 'exec', vm.name, 'iperf3', '-s', '-p', '5201'], { stdio: 'ignore' });
    try {
      await new Promise((r) => setTimeout(r, 300));
      for (const [reverse, rate] of [
        [false, 20e6],
        [true, 30e6],
      ] as const) {
        const out = await client.exec('iperf3', ['-c', '198.51.100.1', '-p', '15201', '-t', '3', '-O', '1', '-J', ...(reverse ? ['-R'] : [])], {
          timeoutMs: 30_000,
        });
        const bps = (JSON.parse(out) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second;
        console.log(`[e2e] ${reverse ? 'egress' : 'ingress'} limit ${rate} bit/s, measured ${Math.round(bps)} bit/s`);
        expect(Math.abs(bps / rate - 1)).toBeLessThanOrEqual(0.1);
      }
    } finally {
      iperf.kill('SIGTERM');
    }
    expect(
      await until(
        async () =>
          (await api(`query ($id: ID!) { instance(id: $id) { bandwidth { status } } }`, { id: instanceId })).instance.bandwidth[0].status === 'APPLIED',
      ),
    ).toBe(true);
  });

  it('repairs an admin\'s "nft flush ruleset" within seconds and counts the repair', async () => {
    const rules = (await api(`query ($id: ID!) { instance(id: $id) { firewall { rules { id } } } }`, { id: instanceId })).instance.firewall.rules as {
      id: string;
    }[];
    await api(`mutation ($id: ID!) { deleteFirewallRule(input: { ruleId: $id }) { __typename } }`, { id: rules[0]!.id });
    await converged();
    expect(await eventually(() => tcpOutcome(client, '198.51.100.1', 18080), 10_000)).toBe('got:hello from vm1');
    const before = (await hostAgent()).agent.driftRepairs;
    await host.exec('nft', ['flush', 'ruleset']);
    const flushed = performance.now();
    expect(await tcpOutcome(client, '198.51.100.1', 18080)).not.toMatch(/^got:/);
    expect(await eventually(() => tcpOutcome(client, '198.51.100.1', 18080, 300), 10_000)).toBe('got:hello from vm1');
    console.log(`[e2e] drift repaired: traffic through the forward again ${Math.round(performance.now() - flushed)} ms after nft flush ruleset`);
    expect(await until(async () => (await hostAgent()).agent.driftRepairs > before)).toBe(true);
  });

  it('keeps objects PENDING while the agent is away, shows it offline, and applies them when it returns', async () => {
    await agent!.stop();
    agent = undefined;
    expect(await until(async () => !(await hostAgent()).agent.online)).toBe(true);
    const f = await api(
      `mutation ($id: ID!) { createPortForward(input: { instanceId: $id, protocol: TCP, hostPort: "18081", targetPort: "8081" }) { ... on CreatePortForwardPayload { portForward { id } } ${ERR} } }`,
      { id: instanceId },
    );
    const id = f.createPortForward.portForward.id as string;
    await new Promise((r) => setTimeout(r, 1000));
    expect((await forwardStatus(id)).status).toBe('PENDING');
    expect(await tcpOutcome(client, '198.51.100.1', 18081)).not.toMatch(/^got:/);
    // the agent process, as a user would start it: no --host (the token names it)
    const proc = startAgent(
      ['--controller', controller.url, '--plugin', 'linux', '--plugin-config', JSON.stringify(pluginConfig()), '--drift-interval', '500'],
      agentToken.secret,
    );
    procs.push(proc);
    expect(await eventually(() => tcpOutcome(client, '198.51.100.1', 18081), 20_000)).toBe('got:second service');
    expect(await until(async () => (await forwardStatus(id)).status === 'APPLIED')).toBe(true);
    expect((await converged())?.agent.online).toBe(true);
  });

  it('converges after the agent is killed mid-apply and restarted', async () => {
    const proc = procs.at(-1)!;
    // 3,000 forwards in one revision; kill the agent as soon as it starts applying it
    const rows = Array.from({ length: 3000 }, (_, n) => `tcp,${30000 + n},10.77.0.2,8080,bulk ${n}`).join('\n');
    const before = proc.output().length;
    const imported = await api(
      `mutation ($hostId: ID!, $csv: String!) { importPortForwards(input: { hostId: $hostId, csv: $csv }) { ... on ImportPortForwardsPayload { result { created } } ${ERR} } }`,
      { hostId, csv: `protocol,host_port,vm_ip,vm_port,note\n${rows}` },
    );
    expect(imported.importPortForwards.result.created).toBe(3000);
    await until(async () => /applying revision/.test(proc.output().slice(before)), 20_000, 5);
    expect(await proc.stop('SIGKILL')).toBe(null);
    const again = startAgent(['--controller', controller.url, '--plugin', 'linux', '--plugin-config', JSON.stringify(pluginConfig())], agentToken.secret);
    procs.push(again);
    expect(await eventually(() => tcpOutcome(client, '198.51.100.1', 32999), 30_000)).toBe('got:hello from vm1');
    expect((await converged())?.agent.lastError).toBeNull();
    expect(await tcpOutcome(client, '198.51.100.1', 18081)).toBe('got:second service');
  }, 90_000);

  it('reconnects after the controller restarts and applies what changed meanwhile', async () => {
    const port = new URL(controller.url).port;
    await controller.proc.stop();
    const restarted = await startController(dataDir, { port: Number(port), fresh: false });
    controller = restarted;
    procs.push(restarted.proc);
    const f = await api(
      `mutation ($id: ID!) { createPortForward(input: { instanceId: $id, protocol: TCP, hostPort: "18082", targetPort: "8080" }) { ... on CreatePortForwardPayload { portForward { id } } ${ERR} } }`,
      { id: instanceId },
    );
    expect(f.createPortForward.portForward).toBeTruthy();
    expect(await eventually(() => tcpOutcome(client, '198.51.100.1', 18082), 30_000)).toBe('got:hello from vm1');
    expect((await converged())?.agent.online).toBe(true);
  }, 90_000);

  it('refuses a wrong token and a revoked one: the agent says so and exits 3', async () => {
    const bad = startAgent(['--controller', controller.url, '--plugin-config', '{not json'], agentToken.secret);
    expect(await exitCode(bad)).toBe(2);
    expect(bad.output()).toMatch(/--plugin-config is not JSON/);
    const slow = startAgent(['--controller', controller.url, '--discover-interval', '50'], agentToken.secret);
    expect(await exitCode(slow)).toBe(2);
    expect(slow.output()).toMatch(/--discover-interval 50 must be an integer of at least 100/);

    const wrong = startAgent(['--controller', controller.url, '--plugin', 'linux', '--plugin-config', JSON.stringify(pluginConfig())], 'gh_wrong');
    procs.push(wrong);
    await wrong.waitFor(/refused the agent token/, 20_000);
    expect(await exitCode(wrong)).toBe(3);

    const running = procs.findLast((p) => p.child.exitCode === null && p !== controller.proc)!;
    await api(`mutation ($id: ID!) { revokeApiToken(input: { tokenId: $id }) { __typename } }`, { id: agentToken.id });
    await running.waitFor(/refused the agent token/, 20_000);
    expect(await exitCode(running)).toBe(3);
    expect(controller.proc.output()).toMatch(/refused|revoked/i);
  }, 60_000);
});
