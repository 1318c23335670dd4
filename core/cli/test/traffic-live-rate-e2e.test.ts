/**
 * The live rate on the `trafficUpdated` subscription against iperf3, on real traffic, as root: a
 * controller in this process, the host agent with the Linux plugin reporting every 500 ms, and
 * iperf3 from a client namespace to an instance namespace through a port forward. A 40 Mbit/s
 * limit on the instance keeps the rate steady; the mean of the subscription's rxBps (into the
 * instance) over the steady part of the run must match iperf3's received rate within 5 %.
 */
import { LinuxDriver } from '@gatehouse/plugin-linux';
import { HostAgent } from '@gatehouse/host-agent';
import { NetnsLab, eventually, labAvailable, tcpOutcome, tcpServer, type LabNamespace, type LabServer } from '@gatehouse/sdk/testkit';
import { startController, type Controller } from '@gatehouse/server';
import { createClient, type Client as WsClient } from 'graphql-ws';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await labAvailable();
const ERR = '... on Error { code message field value }';
const LIMIT_MBPS = 40;
const SECONDS = 10;
const OMIT_SECONDS = 2;

describe.skipIf(!available && !REQUIRE_SYSTEM)('live traffic rate against iperf3', () => {
  const lab = new NetnsLab();
  const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-live-rate-'));
  let controller: Controller;
  let admin: string;
  let client: LabNamespace;
  let hostId: string;
  let instanceId: string;
  let agent: HostAgent | undefined;
  let iperf: ChildProcess | undefined;
  let ws: WsClient | undefined;
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

  beforeAll(async () => {
    const host = await lab.namespace('host');
    client = await lab.namespace('cli');
    const vm = await lab.namespace('vm1');
    await lab.link(client, '198.51.100.2/24', host, '198.51.100.1/24');
    servers.push(tcpServer(vm, 8080, 'hello'));
    controller = await startController({ store: { kind: 'pglite', dataDir }, port: 0 });
    admin = controller.bootstrapSecret!;
    await api(
      `mutation { createIpPool(input: { name: "lr", kind: PRIVATE, network: "${lab.prefix}br", cidr: "10.77.0.0/24", gateway: "10.77.0.1" }) { ... on CreateIpPoolPayload { pool { id } } ${ERR} } }`,
    );
    hostId = (
      await api(
        `mutation { createHost(input: { name: "lr-host", backend: LINUX, publicAddresses: ["198.51.100.1"] }) { ... on CreateHostPayload { host { id } } ${ERR} } }`,
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
    await api(
      `mutation ($id: ID!) { setBandwidthLimit(input: { instanceId: $id, ingressMbps: ${LIMIT_MBPS}, egressMbps: ${LIMIT_MBPS} }) { ... on SetBandwidthLimitPayload { limit { id } } ${ERR} } }`,
      { id: instanceId },
    );
    const token = await api(
      `mutation ($hostId: ID!) { createApiToken(input: { name: "agent", scope: AGENT, hostId: $hostId }) { ... on CreateApiTokenPayload { created { secret } } ${ERR} } }`,
      { hostId },
    );
    agent = new HostAgent({
      controllerUrl: controller.url,
      token: token.createApiToken.created.secret,
      driver: new LinuxDriver({ hostNetns: host.name, namespacePrefix: `${lab.prefix}-vm` }),
      logger: { info() {}, warn() {}, error() {} },
      statsIntervalMs: 500,
    });
    await agent.start();
    iperf = spawn('ip', ['netns', 'exec', vm.name, 'iperf3', '-s', '-p', '5201'], { stdio: 'ignore' });
  }, 120_000);

  afterAll(async () => {
    await ws?.dispose();
    if (iperf?.exitCode === null) iperf.kill('SIGTERM');
    await agent?.stop();
    for (const s of servers) s.stop();
    await controller?.close();
    await lab.cleanup();
    rmSync(dataDir, { recursive: true, force: true });
  }, 60_000);

  it("matches iperf3's rate within 5 % on the trafficUpdated subscription", async () => {
    expect(await eventually(() => tcpOutcome(client, '198.51.100.1', 18080), 20_000)).toBe('got:hello');
    // the limit is applied: the agent reports the host's newest desired state and the limit APPLIED
    const deadline = Date.now() + 30_000;
    for (;;) {
      const d = await api(`query($h: ID!, $i: ID!) { host(id: $h) { desiredRevision agent { appliedRevision } } instance(id: $i) { bandwidth { status } } }`, {
        h: hostId,
        i: instanceId,
      });
      if (d.host.agent?.appliedRevision === d.host.desiredRevision && d.instance.bandwidth[0]?.status === 'APPLIED') break;
      if (Date.now() > deadline) throw new Error('bandwidth limit not applied in time');
      await new Promise((r) => setTimeout(r, 200));
    }

    const seen: { at: number; rxBps: number }[] = [];
    ws = createClient({
      url: controller.url.replace('http://', 'ws://'),
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      connectionParams: { Authorization: `Bearer ${admin}` },
    });
    ws.subscribe<{ trafficUpdated: { at: string; instances: { instanceId: string; rxBps: number }[] } }>(
      { query: 'subscription($ids: [ID!]) { trafficUpdated(instanceIds: $ids) { at instances { instanceId rxBps } } }', variables: { ids: [instanceId] } },
      {
        next: (m) => {
          const update = m.data?.trafficUpdated;
          const mine = update?.instances.find((i) => i.instanceId === instanceId);
          if (update && mine) seen.push({ at: Date.parse(update.at), rxBps: mine.rxBps });
        },
        error: () => {},
        complete: () => {},
      },
    );
    // the subscription is live once it delivers (the agent reports every 500 ms, idle or not)
    const live = Date.now() + 10_000;
    while (seen.length === 0 && Date.now() < live) await new Promise((r) => setTimeout(r, 50));
    expect(seen.length).toBeGreaterThan(0);

    const started = Date.now();
    const out = await client.exec('iperf3', ['-c', '198.51.100.1', '-p', '15201', '-J', '-t', String(SECONDS), '-O', String(OMIT_SECONDS)], {
      timeoutMs: 60_000,
    });
    const ended = Date.now();
    const iperfBps = (JSON.parse(out) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second;
    // steady part: after iperf3's omitted start (plus a report interval), before its last second
    const steady = seen.filter((s) => s.at >= started + (OMIT_SECONDS + 0.5) * 1000 && s.at <= ended - 1000);
    expect(steady.length).toBeGreaterThanOrEqual(8);
    const liveBps = steady.reduce((sum, s) => sum + s.rxBps, 0) / steady.length;
    console.log(
      `[live rate e2e] iperf3 ${(iperfBps / 1e6).toFixed(2)} Mbit/s, trafficUpdated mean rxBps ${(liveBps / 1e6).toFixed(2)} Mbit/s over ${steady.length} messages (${(((liveBps - iperfBps) / iperfBps) * 100).toFixed(2)} %)`,
    );
    expect(iperfBps).toBeGreaterThan(LIMIT_MBPS * 1e6 * 0.8);
    expect(Math.abs(liveBps / iperfBps - 1)).toBeLessThanOrEqual(0.05);
  }, 120_000);
});
