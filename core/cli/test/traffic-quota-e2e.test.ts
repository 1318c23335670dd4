/**
 * A monthly traffic quota enforced on real traffic, as root: a controller in this process with a
 * clock the test moves, the host agent with the Linux plugin reporting every 500 ms, and iperf3
 * between a client namespace and an instance namespace through a port forward. The instance has
 * 40 Mbit/s each way and a 50 MB quota with THROTTLE to 2 Mbit/s: after 50 MB the agent applies
 * 2 Mbit/s in both directions (iperf3 measures it), and once the clock is in the next billing
 * period the configured 40 Mbit/s is back, without anyone touching the limit.
 */
import { LinuxDriver } from '@gatehouse/plugin-linux';
import { HostAgent } from '@gatehouse/host-agent';
import { NetnsLab, eventually, labAvailable, tcpOutcome, tcpServer, type LabNamespace, type LabServer } from '@gatehouse/sdk/testkit';
import { startController, type Controller } from '@gatehouse/server';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await labAvailable();
const ERR = '... on Error { code message field value }';
const LIMIT_MBPS = 40;
const THROTTLE_MBPS = 2;

async function until<T>(probe: () => Promise<T | undefined | false>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value) return value;
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe.skipIf(!available && !REQUIRE_SYSTEM)('traffic quota enforced on real traffic', () => {
  const lab = new NetnsLab();
  const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-quota-e2e-'));
  let offsetMs = 0;
  const clock = { now: () => new Date(Date.now() + offsetMs) };
  let controller: Controller;
  let admin: string;
  let client: LabNamespace;
  let vm: LabNamespace;
  let hostId: string;
  let instanceId: string;
  let agent: HostAgent | undefined;
  let makeAgent: () => HostAgent;
  let iperf: ChildProcess | undefined;
  const servers: LabServer[] = [];

  async function api<T = any>(query: string, variables?: Record<string, unknown>): Promise<T> {
    const response = await fetch(controller.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${admin}` },
      body: JSON.stringify({ query, variables }),
    });
    const body = (await response.json()) as { data?: T; errors?: unknown };
    if (body.errors) throw new Error(JSON.stringify(body.errors));
    return body.data!;
  }
  const period = async () =>
    (await api(`query($id: ID!) { instance(id: $id) { traffic { period { totalBytes quotaState throttled start } } } }`, { id: instanceId })).instance.traffic
      .period as { totalBytes: number; quotaState: string; throttled: boolean; start: string };
  /** The agent applied the host's newest desired state, and the limit says APPLIED. */
  const applied = () =>
    until(async () => {
      const d = await api(`query($h: ID!, $i: ID!) { host(id: $h) { desiredRevision agent { appliedRevision } } instance(id: $i) { bandwidth { status } } }`, {
        h: hostId,
        i: instanceId,
      });
      return d.host.agent.appliedRevision === d.host.desiredRevision && d.instance.bandwidth[0].status === 'APPLIED';
    });
  /** iperf3 from the client to the instance (reverse: the instance sends), bits per second received. */
  async function measure(reverse: boolean, extra: string[] = ['-t', '4', '-O', '1']): Promise<number> {
    const out = await client.exec('iperf3', ['-c', '198.51.100.1', '-p', '15201', '-J', ...extra, ...(reverse ? ['-R'] : [])], { timeoutMs: 90_000 });
    return (JSON.parse(out) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second;
  }

  beforeAll(async () => {
    const host = await lab.namespace('host');
    client = await lab.namespace('cli');
    vm = await lab.namespace('vm1');
    await lab.link(client, '198.51.100.2/24', host, '198.51.100.1/24');
    servers.push(tcpServer(vm, 8080, 'hello'));
    controller = await startController({ store: { kind: 'pglite', dataDir }, port: 0, clock });
    admin = controller.bootstrapSecret!;
    await api(
      `mutation { createIpPool(input: { name: "q", kind: PRIVATE, network: "${lab.prefix}br", cidr: "10.78.0.0/24", gateway: "10.78.0.1" }) { ... on CreateIpPoolPayload { pool { id } } ${ERR} } }`,
    );
    hostId = (
      await api(
        `mutation { createHost(input: { name: "q-host", backend: LINUX, publicAddresses: ["198.51.100.1"] }) { ... on CreateHostPayload { host { id } } ${ERR} } }`,
      )
    ).createHost.host.id;
    instanceId = (
      await api(
        `mutation ($hostId: ID!, $name: String!) { createInstance(input: { hostId: $hostId, name: "vm1", externalId: $name, nics: [{ network: "${lab.prefix}br" }] }) { ... on CreateInstancePayload { instance { id } } ${ERR} } }`,
        { hostId, name: vm.name },
      )
    ).createInstance.instance.id;
    for (const [hostPort, targetPort] of [
      ['18080', '8080'],
      ['15201', '5201'],
    ])
      await api(
        `mutation ($id: ID!) { createPortForward(input: { instanceId: $id, protocol: TCP, hostPort: "${hostPort}", targetPort: "${targetPort}" }) { ... on CreatePortForwardPayload { portForward { id } } ${ERR} } }`,
        { id: instanceId },
      );
    const limit = await api(
      `mutation ($id: ID!) { setBandwidthLimit(input: { instanceId: $id, ingressMbps: ${LIMIT_MBPS}, egressMbps: ${LIMIT_MBPS}, monthlyQuotaGb: 0.05, quotaAction: THROTTLE, throttleMbps: ${THROTTLE_MBPS} }) { ... on SetBandwidthLimitPayload { limit { id } } ${ERR} } }`,
      { id: instanceId },
    );
    expect(limit.setBandwidthLimit.limit).toBeTruthy();
    const token = await api(
      `mutation ($hostId: ID!) { createApiToken(input: { name: "agent", scope: AGENT, hostId: $hostId }) { ... on CreateApiTokenPayload { created { secret } } ${ERR} } }`,
      { hostId },
    );
    makeAgent = () =>
      new HostAgent({
        controllerUrl: controller.url,
        token: token.createApiToken.created.secret,
        driver: new LinuxDriver({ hostNetns: host.name, namespacePrefix: `${lab.prefix}-vm` }),
        logger: { info() {}, warn() {}, error() {} },
        statsIntervalMs: 500,
      });
    agent = makeAgent();
    await agent.start();
    iperf = spawn('ip', ['netns', 'exec', vm.name, 'iperf3', '-s', '-p', '5201'], { stdio: 'ignore' });
  }, 120_000);

  afterAll(async () => {
    if (iperf?.exitCode === null) iperf.kill('SIGTERM');
    await agent?.stop();
    for (const s of servers) s.stop();
    await controller?.close();
    await lab.cleanup();
    rmSync(dataDir, { recursive: true, force: true });
  }, 60_000);

  it('throttles to 2 Mbit/s both ways after 50 MB, and the next period restores 40 Mbit/s by itself', async () => {
    expect(await eventually(() => tcpOutcome(client, '198.51.100.1', 18080), 20_000)).toBe('got:hello');
    await applied();
    const unthrottled = await measure(false);
    expect(Math.abs(unthrottled / (LIMIT_MBPS * 1e6) - 1)).toBeLessThanOrEqual(0.1);
    expect((await period()).quotaState).not.toBe('EXCEEDED');

    // pass the 50 MB quota: what is left of it and 1 MB more (the rest of a transfer crossing it runs throttled)
    await until(async () => (await period()).totalBytes > 0);
    const left = 50e6 - (await period()).totalBytes;
    await measure(false, ['-n', String(Math.max(1e6, Math.ceil(left + 1e6)))]);
    const exceeded = await until(async () => {
      const p = await period();
      return p.throttled ? p : undefined;
    });
    expect(exceeded.quotaState).toBe('EXCEEDED');
    expect(exceeded.totalBytes).toBeGreaterThanOrEqual(50e6);
    await applied();
    const throttledIn = await measure(false);
    const throttledOut = await measure(true);
    console.log(
      `[quota e2e] before ${Math.round(unthrottled / 1e3)} kbit/s; after ${exceeded.totalBytes} bytes: in ${Math.round(throttledIn / 1e3)} kbit/s, out ${Math.round(throttledOut / 1e3)} kbit/s`,
    );
    expect(Math.abs(throttledIn / (THROTTLE_MBPS * 1e6) - 1)).toBeLessThanOrEqual(0.15);
    expect(Math.abs(throttledOut / (THROTTLE_MBPS * 1e6) - 1)).toBeLessThanOrEqual(0.15);

    // a restarted agent keeps the throttle (the controller's desired state still holds it)
    const revision = (await api(`query($h: ID!) { host(id: $h) { desiredRevision } }`, { h: hostId })).host.desiredRevision;
    await agent!.stop();
    agent = makeAgent();
    await agent.start();
    await applied();
    expect((await api(`query($h: ID!) { host(id: $h) { desiredRevision } }`, { h: hostId })).host.desiredRevision).toBe(revision);
    expect((await period()).throttled).toBe(true);
    const afterRestart = await measure(false);
    console.log(`[quota e2e] after an agent restart: ${Math.round(afterRestart / 1e3)} kbit/s`);
    expect(Math.abs(afterRestart / (THROTTLE_MBPS * 1e6) - 1)).toBeLessThanOrEqual(0.15);

    // the clock moves into the next billing period: the next report (or the 10 s timer) lifts the throttle
    const now = clock.now();
    offsetMs += Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1, 0, 0, 5) - now.getTime();
    const lifted = await until(async () => {
      const p = await period();
      return !p.throttled ? p : undefined;
    });
    expect(lifted.quotaState).toBe('NORMAL');
    expect(Date.parse(lifted.start)).toBeGreaterThan(Date.parse(exceeded.start));
    await applied();
    const restored = await measure(false);
    console.log(`[quota e2e] next period: ${Math.round(restored / 1e3)} kbit/s`);
    expect(Math.abs(restored / (LIMIT_MBPS * 1e6) - 1)).toBeLessThanOrEqual(0.1);
  }, 180_000);
});
