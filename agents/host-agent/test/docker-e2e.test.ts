/**
 * End to end with the Docker plugin, as root: a real controller process, the host agent in process
 * with the Docker plugin's driver, and a real dockerd of the test's own inside a network namespace
 * (`@gatehouse/plugin-docker/testing`: the namespace `host` with the public address 198.51.100.1,
 * a `client` namespace at 198.51.100.2). The test drives only the public GraphQL API and the
 * Engine API (for what happens behind Gatehouse's back), and watches real traffic:
 *
 * - a container started on a Docker network shows up in GraphQL on its host, with its address
 *   claimed from the pool whose network is that Docker network (discovery);
 * - a port forward to its HTTP server, fetched through from the client namespace; a firewall rule
 *   that blocks it, disabled again; a bandwidth limit measured with iperf3, removed again; a second
 *   NIC on a Docker network the plugin creates, reached from the Docker host's namespace;
 * - the container deleted through the Engine API: the instance, its forwards, proxy, rule and
 *   addresses are reclaimed by the controller on its own, with audit entries by the system actor.
 */
import { DockerDriver, validateConfig } from '@gatehouse/plugin-docker';
import { DockerLab, dockerAvailable, type LabContainer } from '@gatehouse/plugin-docker/testing';
import { eventually } from '@gatehouse/sdk/testkit';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HostAgent } from '../src/index.js';
import { ERR, REQUIRE_SYSTEM, SYSTEM_ACTOR, controllerQueries, httpOutcome, payload, type InstanceView } from './backend-e2e.js';
import { startController, until, type Proc } from './support.js';

const available = await dockerAvailable();

const BODY = 'hello from a gatehouse container\n';
const DISCOVER_MS = 500;

describe.skipIf(!available && !REQUIRE_SYSTEM)('host agent end to end with the Docker plugin', () => {
  let d: DockerLab;
  let net: string;
  let net2: string;
  const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-docker-e2e-'));
  let controller: { proc: Proc; url: string } | undefined;
  let admin: string;
  let hostId: string;
  let poolId: string;
  let pool2Id: string;
  let agentToken: string;
  let agent: HostAgent | undefined;
  let web: LabContainer;
  let instance: InstanceView | undefined;
  const forwards: string[] = [];
  let ruleId: string;
  let proxyId: string;
  let second: { nicId: string; address: string; addressId: string };
  let proxySetting: string | undefined;
  const logs: string[] = [];
  const logger = {
    info: (m: string, f?: object) => logs.push(`info ${m} ${JSON.stringify(f ?? {})}`),
    warn: (m: string, f?: object) => logs.push(`warn ${m} ${JSON.stringify(f ?? {})}`),
    error: (m: string, f?: object) => logs.push(`error ${m} ${JSON.stringify(f ?? {})}`),
  };
  const queries = controllerQueries(() => ({ url: controller!.url, secret: admin, hostId }));
  const { api } = queries;
  const fetchThroughForward = (port = 18080, timeoutMs?: number) => httpOutcome(d.client, `http://198.51.100.1:${port}/`, timeoutMs);

  const { instances, hostAgent, converged, forwardStatus, audit } = queries;
  const startAgent = async () => {
    agent = new HostAgent({
      controllerUrl: controller!.url,
      token: agentToken,
      driver: new DockerDriver(validateConfig({ socketPath: d.socketPath, hostNetns: d.host.name })),
      logger,
      driftIntervalMs: 300,
      thoroughEvery: 3,
      discoverIntervalMs: DISCOVER_MS,
      backoff: { minMs: 100, maxMs: 1000 },
    });
    await agent.start();
  };
  /** The container's instance as discovery registered it (step a); undefined until it is there. */
  const registered = async () => (await instances()).find((i) => i.externalId === web.id);

  beforeAll(async () => {
    // the controller serves no web proxies here (no Caddy on the machine's ports 80/443); a proxy
    // created below stays PENDING, which is all the reclaim needs
    proxySetting = process.env.GATEHOUSE_PROXY;
    process.env.GATEHOUSE_PROXY = 'off';
    d = await DockerLab.create();
    net = `${d.prefix}net`;
    net2 = `${d.prefix}net2`;
    await d.createNetwork(net, '10.78.0.0/24', '10.78.0.1');
    const c = await startController(dataDir);
    controller = c;
    admin = c.bootstrapSecret!;
    const pool = await api(
      `mutation ($n: String!) { createIpPool(input: { name: "docker-net", kind: PRIVATE, network: $n, cidr: "10.78.0.0/24", gateway: "10.78.0.1" }) { ... on CreateIpPoolPayload { pool { id } } ${ERR} } }`,
      { n: net },
    );
    poolId = payload(pool.createIpPool, 'pool').id;
    // the second NIC's network: no Docker network of that name yet, the plugin creates it
    const pool2 = await api(
      `mutation ($n: String!) { createIpPool(input: { name: "docker-net2", kind: PRIVATE, network: $n, cidr: "10.79.0.0/24", gateway: "10.79.0.1" }) { ... on CreateIpPoolPayload { pool { id } } ${ERR} } }`,
      { n: net2 },
    );
    pool2Id = payload(pool2.createIpPool, 'pool').id;
    const h = await api(
      `mutation { createHost(input: { name: "docker-host", backend: DOCKER, publicAddresses: ["198.51.100.1"] }) { ... on CreateHostPayload { host { id } } ${ERR} } }`,
    );
    hostId = payload(h.createHost, 'host').id;
    const t = await api(
      `mutation ($hostId: ID!) { createApiToken(input: { name: "agent", scope: AGENT, hostId: $hostId }) { ... on CreateApiTokenPayload { created { secret } } ${ERR} } }`,
      { hostId },
    );
    agentToken = payload(t.createApiToken, 'created').secret;
    await startAgent();
    expect((await converged())?.agent).toMatchObject({ online: true, lastError: null });
  }, 180_000);

  afterAll(async () => {
    if (process.env.GATEHOUSE_E2E_LOGS) {
      console.log(`--- agent\n${logs.slice(-200).join('\n')}`);
      console.log(`--- controller (exit ${controller?.proc.child.exitCode ?? controller?.proc.child.signalCode})\n${controller?.proc.output().slice(-6000)}`);
    }
    try {
      await agent?.stop();
    } finally {
      try {
        await controller?.proc.stop('SIGKILL');
      } finally {
        try {
          await d?.cleanup();
        } finally {
          rmSync(dataDir, { recursive: true, force: true });
          if (proxySetting === undefined) delete process.env.GATEHOUSE_PROXY;
          else process.env.GATEHOUSE_PROXY = proxySetting;
        }
      }
    }
  }, 120_000);

  it('a container started on a Docker network appears in GraphQL on its host, with its address from the pool', async () => {
    web = await d.createContainer(
      'web',
      { network: net },
      { cmd: ['/bin/busybox', 'httpd', '-f', '-p', '8080', '-h', '/www'], files: { '/www/index.html': BODY } },
    );
    const inspected = (await d.engine.container(web.id))!;
    const dockerAddress = inspected.NetworkSettings.Networks![net]!.IPAddress;
    expect(dockerAddress).toMatch(/^10\.78\.0\.\d+$/);
    const started = Date.now();
    // a few discovery intervals, with nothing else happening on the host
    instance = await until(registered, 20 * DISCOVER_MS);
    const h = await hostAgent();
    if (!instance)
      throw new Error(
        `the container was not registered within ${20 * DISCOVER_MS} ms; the agent last reported a discovery at ${h.agent.discoveredAt} ` +
          `(now ${new Date().toISOString()}), listing ${JSON.stringify(h.agent.discoveredInstances.map((i) => i.externalId))}`,
      );
    console.log(`[docker-e2e] container registered ${Date.now() - started} ms after it started`);
    expect(instance).toMatchObject({
      name: web.name,
      externalId: web.id,
      owner: { name: 'admin' },
      nics: [
        {
          name: 'eth0',
          mac: inspected.NetworkSettings.Networks![net]!.MacAddress,
          network: net,
          addresses: [{ address: dockerAddress, cidr: `${dockerAddress}/24`, pool: { id: poolId } }],
        },
      ],
    });
    // the agent applies the host's new revision: the NIC is the container's own connection, as it is
    expect((await converged())?.agent.lastError).toBeNull();
    expect(Object.keys((await d.engine.container(web.id))!.NetworkSettings.Networks!)).toEqual([net]);
  });

  it('forwards a public port to the container and serves its HTTP body to the client namespace', async () => {
    if (!instance) throw new Error('the container was not registered (see the first test)');
    const f = await api(
      `mutation ($id: ID!) { createPortForward(input: { instanceId: $id, protocol: TCP, hostPort: "18080", targetPort: "8080" }) { ... on CreatePortForwardPayload { portForward { id } } ${ERR} } }`,
      { id: instance.id },
    );
    forwards.push(payload(f.createPortForward, 'portForward').id);
    expect(await eventually(() => fetchThroughForward(), 15_000)).toBe(`got:${BODY}`);
    expect(await until(async () => (await forwardStatus(forwards[0]!))?.status === 'APPLIED')).toBe(true);
  });

  it('blocks it with an inbound firewall rule, and lets it through again when the rule is disabled', async () => {
    const rule = await api(
      `mutation ($id: ID!) { addFirewallRule(input: { instanceId: $id, direction: INBOUND, protocol: TCP, ports: "8080", action: DROP, priority: 10 }) { ... on AddFirewallRulePayload { rule { id } } ${ERR} } }`,
      { id: instance!.id },
    );
    ruleId = payload(rule.addFirewallRule, 'rule').id;
    expect(await until(async () => (await fetchThroughForward()) === 'timeout')).toBe(true);
    await converged();
    expect(await fetchThroughForward()).toBe('timeout');
    const disabled = await api(
      `mutation ($id: ID!) { updateFirewallRule(input: { ruleId: $id, enabled: false }) { ... on UpdateFirewallRulePayload { rule { enabled } } ${ERR} } }`,
      { id: ruleId },
    );
    expect(payload(disabled.updateFirewallRule, 'rule').enabled).toBe(false);
    expect(await eventually(() => fetchThroughForward(), 15_000)).toBe(`got:${BODY}`);
  });

  it('caps the rate into the container with a bandwidth limit (measured with iperf3), and lifts it', async () => {
    const ns = await d.namespaceOf(web.id);
    const iperf = spawn('ip', ['netns', 'exec', ns.name, 'iperf3', '-s', '-p', '5201'], { stdio: 'ignore' });
    try {
      const f = await api(
        `mutation ($id: ID!) { createPortForward(input: { instanceId: $id, protocol: TCP, hostPort: "15201", targetPort: "5201" }) { ... on CreatePortForwardPayload { portForward { id } } ${ERR} } }`,
        { id: instance!.id },
      );
      forwards.push(payload(f.createPortForward, 'portForward').id);
      const limit = await api(
        `mutation ($id: ID!) { setBandwidthLimit(input: { instanceId: $id, ingressMbps: 20 }) { ... on SetBandwidthLimitPayload { limit { id ingressBps } } ${ERR} } }`,
        { id: instance!.id },
      );
      expect(payload(limit.setBandwidthLimit, 'limit').ingressBps).toBe(20e6);
      const bandwidthStatus = async () =>
        (await api(`query ($id: ID!) { instance(id: $id) { bandwidth { status } } }`, { id: instance!.id })).instance.bandwidth.map(
          (b: { status: string }) => b.status,
        ) as string[];
      expect(await until(async () => (await bandwidthStatus())[0] === 'APPLIED')).toBe(true);
      expect(await until(async () => (await forwardStatus(forwards[1]!))?.status === 'APPLIED')).toBe(true);
      await converged();
      const measure = async (seconds: number) => {
        const out = await d.client.exec('iperf3', ['-c', '198.51.100.1', '-p', '15201', '-t', String(seconds), '-O', '1', '-J'], { timeoutMs: 30_000 });
        return (JSON.parse(out) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second;
      };
      const limited = await measure(3);
      console.log(`[docker-e2e] ingress limit 20000000 bit/s through the forward, measured ${Math.round(limited)} bit/s (${(limited / 20e6).toFixed(3)})`);
      expect(Math.abs(limited / 20e6 - 1)).toBeLessThanOrEqual(0.15);

      const removed = await api(`mutation ($id: ID!) { removeBandwidthLimit(input: { instanceId: $id }) { __typename } }`, { id: instance!.id });
      expect(removed.removeBandwidthLimit?.__typename ?? 'RemoveBandwidthLimitPayload').toBe('RemoveBandwidthLimitPayload');
      expect(await bandwidthStatus()).toEqual([]);
      await converged();
      const free = await measure(2);
      console.log(`[docker-e2e] limit removed: measured ${Math.round(free)} bit/s`);
      expect(free).toBeGreaterThan(2 * 20e6);
    } finally {
      iperf.kill('SIGTERM');
    }
  });

  it('adds a second NIC on a Docker network the plugin creates, and the container answers on its address', async () => {
    const added = await api(
      `mutation ($id: ID!, $n: String!) { addNic(input: { instanceId: $id, network: $n }) { ... on AddNicPayload { added { nic { id network } addresses { id address cidr pool { id } } } } ${ERR} } }`,
      { id: instance!.id, n: net2 },
    );
    const nic = payload(added.addNic, 'added');
    expect(nic.nic.network).toBe(net2);
    expect(nic.addresses[0]).toMatchObject({ address: expect.stringMatching(/^10\.79\.0\.\d+$/), pool: { id: pool2Id } });
    second = { nicId: nic.nic.id, address: nic.addresses[0].address, addressId: nic.addresses[0].id };
    // from the Docker host's namespace (its bridge for net2 is on-link): only the new NIC has that address
    expect(await eventually(() => httpOutcome(d.host, `http://${second.address}:8080/`), 20_000)).toBe(`got:${BODY}`);
    expect((await converged())?.agent.lastError).toBeNull();
    const inspected = (await d.engine.container(web.id))!;
    expect(inspected.NetworkSettings.Networks![net2]?.IPAddress).toBe(second.address);
    expect((await d.engine.network(net2))?.Labels).toMatchObject({ 'io.gatehouse.managed': 'true' });
    // and discovery reports it as the container's second interface
    expect(
      await until(async () =>
        (await hostAgent()).agent.discoveredInstances
          .find((i) => i.externalId === web.id)
          ?.nics.some((n) => n.name === 'eth1' && n.addresses.includes(`${second.address}/24`)),
      ),
    ).toBe(true);
  });

  it("a container deleted behind Gatehouse's back is reclaimed: instance, forwards, proxy, rule and addresses, with audit entries", async () => {
    const proxy = await api(
      `mutation ($id: ID!) { createWebProxy(input: { instanceId: $id, domain: "web.docker-e2e.test", targetPort: 8080, tlsMode: NONE }) { ... on CreateWebProxyPayload { webProxy { id } } ${ERR} } }`,
      { id: instance!.id },
    );
    proxyId = payload(proxy.createWebProxy, 'webProxy').id;
    const before = (await instances()).find((i) => i.id === instance!.id)!;
    const addressIds = before.nics.flatMap((n) => n.addresses.map((a) => a.id));
    const addresses = before.nics.map((n) => ({ network: n.network, addresses: n.addresses.map((a) => a.address) }));
    expect(addressIds).toHaveLength(2);
    expect(await fetchThroughForward()).toBe(`got:${BODY}`);

    await d.removeContainer(web.id);
    const removed = Date.now();
    expect(await until(async () => !(await instances()).some((i) => i.id === instance!.id), 30 * DISCOVER_MS)).toBe(true);
    console.log(`[docker-e2e] deleted container reclaimed ${Date.now() - removed} ms after its removal`);

    for (const id of forwards) expect(await forwardStatus(id)).toBeNull();
    expect((await api(`query ($id: ID!) { webProxy(id: $id) { id } }`, { id: proxyId })).webProxy).toBeNull();
    expect(await fetchThroughForward()).not.toMatch(/^got:/);

    // audit: everything by the system actor
    const expectAudit = async (objectId: string, action: string) => {
      const entries = await audit(objectId);
      expect(
        entries.find((e) => e.action === action),
        `${action} of ${objectId} in ${JSON.stringify(entries.map((e) => e.action))}`,
      ).toMatchObject({
        actorUserId: SYSTEM_ACTOR,
      });
    };
    await expectAudit(instance!.id, 'instance.delete');
    for (const id of forwards) await expectAudit(id, 'portForward.delete');
    await expectAudit(proxyId, 'webProxy.delete');
    await expectAudit(ruleId, 'firewallRule.delete');
    for (const n of before.nics) await expectAudit(n.id, 'nic.delete');
    for (const id of addressIds) await expectAudit(id, 'address.reclaim');

    // the addresses are free: a new instance can take exactly them
    const probe = await api(
      `mutation ($h: ID!, $nics: [NicSpecInput!]) { createInstance(input: { hostId: $h, name: "probe", nics: $nics }) { ... on CreateInstancePayload { instance { id nics { addresses { address } } } } ${ERR} } }`,
      { h: hostId, nics: addresses },
    );
    expect(probe.createInstance.instance?.nics.flatMap((n: { addresses: { address: string }[] }) => n.addresses.map((a) => a.address))).toEqual(
      addresses.flatMap((a) => a.addresses),
    );
    await api(`mutation ($id: ID!) { deleteInstance(input: { instanceId: $id }) { __typename } }`, { id: probe.createInstance.instance.id });
    // nothing of the instance is left on the Docker host: the managed network went with the last connection
    expect(await until(async () => (await d.engine.network(net2)) === undefined)).toBe(true);
    expect(await until(async () => !/18080|15201/.test(await d.host.exec('nft', ['list', 'table', 'inet', 'gatehouse']).catch(() => '')))).toBe(true);
  });
});
