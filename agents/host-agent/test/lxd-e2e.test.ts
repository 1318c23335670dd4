/**
 * End to end with the LXD plugin, as root: a real controller process, the host agent in process
 * with the LXD plugin's driver, and a real LXD daemon of the test's own inside a network namespace
 * (`@gatehouse/plugin-lxd/testing`: the namespace `host` holds LXD's bridges, dnsmasq and the
 * containers' veths, with the public address 198.51.100.1; a client namespace at 198.51.100.2).
 * The test drives only the public GraphQL API, and the LXD API for what an admin does behind
 * Gatehouse's back, and watches real traffic:
 *
 * - a container launched on the LXD bridge with no address (its DHCP client off) shows up in
 *   GraphQL on its host, with an address allocated from the host's default pool, which the plugin
 *   then configures (the device's `ipv4.address`, and inside the guest);
 * - a port forward to its busybox httpd, fetched through from the client namespace; a firewall
 *   rule that blocks it, deleted again; a bandwidth limit measured with iperf3, removed again; a
 *   second NIC on a second LXD bridge, hot-plugged by the plugin, reached from LXD's namespace;
 * - the container deleted through the LXD API: the instance, its forwards, proxy, rule and
 *   addresses are reclaimed by the controller on its own, with audit entries by the system actor.
 */
import { LxdDriver, validateConfig, type LxdInstance } from '@gatehouse/plugin-lxd';
import { LAB_PUBLIC_V4, LxdLab, lxdAvailable } from '@gatehouse/plugin-lxd/testing';
import { eventually } from '@gatehouse/sdk/testkit';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HostAgent } from '../src/index.js';
import { ERR, REQUIRE_SYSTEM, SYSTEM_ACTOR, controllerQueries, httpOutcome, payload, type InstanceView } from './backend-e2e.js';
import { startController, until, type Proc } from './support.js';

const available = await lxdAvailable();

const BODY = 'hello from a gatehouse lxd container\n';
const DISCOVER_MS = 500;
const NAME = 'web';

/** An IPv4 address as a number. */
const v4 = (address: string) => address.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);

describe.skipIf(!available && !REQUIRE_SYSTEM)('host agent end to end with the LXD plugin', () => {
  let lxd: LxdLab | undefined;
  let network2: string;
  const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-lxd-e2e-'));
  let controller: { proc: Proc; url: string } | undefined;
  let admin: string;
  let hostId: string;
  let poolId: string;
  let pool2Id: string;
  let agentToken: string;
  let agent: HostAgent | undefined;
  let instance: InstanceView | undefined;
  const forwards: string[] = [];
  let ruleId: string;
  const children: ChildProcess[] = [];
  let proxySetting: string | undefined;
  const logs: string[] = [];
  const logger = {
    info: (m: string, f?: object) => logs.push(`info ${m} ${JSON.stringify(f ?? {})}`),
    warn: (m: string, f?: object) => logs.push(`warn ${m} ${JSON.stringify(f ?? {})}`),
    error: (m: string, f?: object) => logs.push(`error ${m} ${JSON.stringify(f ?? {})}`),
  };
  const queries = controllerQueries(() => ({ url: controller!.url, secret: admin, hostId }));
  const { api } = queries;
  const fetchThroughForward = (port = 18080, timeoutMs?: number) => httpOutcome(lxd!.outside, `http://${LAB_PUBLIC_V4}:${port}/`, timeoutMs);

  const { instances, hostAgent, converged, forwardStatus, audit } = queries;
  const lxdInstance = () => lxd!.client.call<LxdInstance>('GET', `/1.0/instances/${NAME}?recursion=1`);
  /** The instance's addresses inside the guest, per interface, as LXD reports them (CIDR form). */
  const guestAddresses = async () => {
    const state = (await lxd!.client.call<LxdInstance>('GET', `/1.0/instances/${NAME}?recursion=1`)).state;
    return Object.fromEntries(
      Object.entries(state?.network ?? {}).map(([ifname, n]) => [
        ifname,
        n.addresses.filter((a) => a.family === 'inet' && a.scope === 'global').map((a) => `${a.address}/${a.netmask}`),
      ]),
    );
  };
  const registered = async () => (await instances()).find((i) => i.externalId === NAME);

  beforeAll(async () => {
    // the controller serves no web proxies here (no Caddy on the machine's ports 80/443); a proxy
    // created below stays PENDING, which is all the reclaim needs
    proxySetting = process.env.GATEHOUSE_PROXY;
    process.env.GATEHOUSE_PROXY = 'off';
    lxd = await LxdLab.start();
    // LXD's dnsmasq hands out .2-.99 on both bridges, Gatehouse's pools .100-.199: never the same address
    await lxd.client.call('PATCH', `/1.0/networks/${lxd.network}`, { config: { 'ipv4.dhcp.ranges': '10.77.0.2-10.77.0.99' } });
    network2 = await lxd.addNetwork('10.78.0.1/24');
    await lxd.client.call('PATCH', `/1.0/networks/${network2}`, { config: { 'ipv4.dhcp.ranges': '10.78.0.2-10.78.0.99' } });

    const c = await startController(dataDir);
    controller = c;
    admin = c.bootstrapSecret!;
    const pool = await api(
      `mutation ($n: String!) { createIpPool(input: { name: "lxd-br", kind: PRIVATE, network: $n, cidr: "10.77.0.0/24", start: "10.77.0.100", end: "10.77.0.199", gateway: "10.77.0.1" }) { ... on CreateIpPoolPayload { pool { id } } ${ERR} } }`,
      { n: lxd.network },
    );
    poolId = payload(pool.createIpPool, 'pool').id;
    const pool2 = await api(
      `mutation ($n: String!) { createIpPool(input: { name: "lxd-br2", kind: PRIVATE, network: $n, cidr: "10.78.0.0/24", start: "10.78.0.100", end: "10.78.0.199", gateway: "10.78.0.1" }) { ... on CreateIpPoolPayload { pool { id } } ${ERR} } }`,
      { n: network2 },
    );
    pool2Id = payload(pool2.createIpPool, 'pool').id;
    const h = await api(
      `mutation { createHost(input: { name: "lxd-host", backend: LXD, publicAddresses: ["${LAB_PUBLIC_V4}"] }) { ... on CreateHostPayload { host { id } } ${ERR} } }`,
    );
    hostId = payload(h.createHost, 'host').id;
    const updated = await api(
      `mutation ($h: ID!, $p: ID!) { updateHost(input: { hostId: $h, defaultPoolId: $p }) { ... on UpdateHostPayload { host { defaultPoolId } } ${ERR} } }`,
      { h: hostId, p: poolId },
    );
    expect(payload(updated.updateHost, 'host').defaultPoolId).toBe(poolId);
    const t = await api(
      `mutation ($hostId: ID!) { createApiToken(input: { name: "agent", scope: AGENT, hostId: $hostId }) { ... on CreateApiTokenPayload { created { secret } } ${ERR} } }`,
      { hostId },
    );
    agentToken = payload(t.createApiToken, 'created').secret;
    agent = new HostAgent({
      controllerUrl: controller.url,
      token: agentToken,
      driver: new LxdDriver(validateConfig({ socket: lxd.client.socketPath, hostNetns: lxd.host.name })),
      logger,
      driftIntervalMs: 300,
      thoroughEvery: 3,
      discoverIntervalMs: DISCOVER_MS,
      backoff: { minMs: 100, maxMs: 1000 },
    });
    await agent.start();
    expect((await converged())?.agent).toMatchObject({ online: true, lastError: null });
  }, 180_000);

  afterAll(async () => {
    if (process.env.GATEHOUSE_E2E_LOGS) {
      console.log(`--- agent\n${logs.slice(-200).join('\n')}`);
      console.log(`--- controller (exit ${controller?.proc.child.exitCode ?? controller?.proc.child.signalCode})\n${controller?.proc.output().slice(-6000)}`);
    }
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    try {
      await agent?.stop();
    } finally {
      try {
        await controller?.proc.stop('SIGKILL');
      } finally {
        try {
          await lxd?.cleanup();
        } finally {
          rmSync(dataDir, { recursive: true, force: true });
          if (proxySetting === undefined) delete process.env.GATEHOUSE_PROXY;
          else process.env.GATEHOUSE_PROXY = proxySetting;
        }
      }
    }
  }, 180_000);

  it('a container launched without an address appears in GraphQL on its host, with an address from the default pool that the plugin configures', async () => {
    const launched = Date.now();
    await lxd!.launchInstance(NAME, { nics: [{ device: 'eth0', network: lxd!.network }], dhcp: false });
    await lxd!.startHttpServer(NAME, 8080, BODY);
    console.log(`[lxd-e2e] container launched, httpd started in ${Date.now() - launched} ms`);
    const started = Date.now();
    // a few discovery intervals, with nothing else happening on the host
    instance = await until(registered, 20 * DISCOVER_MS);
    if (!instance) {
      const h = await hostAgent();
      throw new Error(
        `the container was not registered within ${20 * DISCOVER_MS} ms; the agent last reported a discovery at ${h.agent.discoveredAt} ` +
          `(now ${new Date().toISOString()}), listing ${JSON.stringify(h.agent.discoveredInstances.map((i) => i.externalId))}`,
      );
    }
    console.log(`[lxd-e2e] container registered ${Date.now() - started} ms after it started`);
    const mac = (await lxdInstance()).config['volatile.eth0.hwaddr'];
    expect(instance).toMatchObject({
      name: NAME,
      externalId: NAME,
      owner: { name: 'admin' },
      nics: [{ name: 'eth0', mac, network: lxd!.network, addresses: [{ pool: { id: poolId } }] }],
    });
    const address = instance.nics[0]!.addresses[0]!.address;
    expect(instance.nics[0]!.addresses).toHaveLength(1);
    expect(v4(address)).toBeGreaterThanOrEqual(v4('10.77.0.100'));
    expect(v4(address)).toBeLessThanOrEqual(v4('10.77.0.199'));
    expect(instance.nics[0]!.addresses[0]!.cidr).toBe(`${address}/24`);
    // the agent applies the new revision: LXD's device gets the address, and the guest has it
    expect((await converged())?.agent.lastError).toBeNull();
    expect(await until(async () => (await guestAddresses()).eth0?.includes(`${address}/24`))).toBe(true);
    const configured = await lxdInstance();
    expect(configured.devices.eth0).toMatchObject({ type: 'nic', network: lxd!.network, 'ipv4.address': address });
    expect(configured.config['user.gatehouse.instance-id']).toBe(instance.id);
    // and the next discoveries report it as the container's address
    expect(
      await until(async () =>
        (await hostAgent()).agent.discoveredInstances.find((i) => i.externalId === NAME)?.nics.some((n) => n.addresses.includes(`${address}/24`)),
      ),
    ).toBe(true);
    expect(await httpOutcome(lxd!.host, `http://${address}:8080/`)).toBe(`got:${BODY}`);
  });

  it('forwards a public port to the container and serves its HTTP body to the client namespace', async () => {
    if (!instance) throw new Error('no registered instance (see the first test)');
    const f = await api(
      `mutation ($id: ID!) { createPortForward(input: { instanceId: $id, protocol: TCP, hostPort: "18080", targetPort: "8080" }) { ... on CreatePortForwardPayload { portForward { id } } ${ERR} } }`,
      { id: instance.id },
    );
    forwards.push(payload(f.createPortForward, 'portForward').id);
    expect(await eventually(() => fetchThroughForward(), 15_000)).toBe(`got:${BODY}`);
    expect(await until(async () => (await forwardStatus(forwards[0]!))?.status === 'APPLIED')).toBe(true);
  });

  it('blocks it with an inbound DROP rule, and lets it through again when the rule is deleted', async () => {
    const rule = await api(
      `mutation ($id: ID!) { addFirewallRule(input: { instanceId: $id, direction: INBOUND, protocol: TCP, ports: "8080", action: DROP, priority: 10 }) { ... on AddFirewallRulePayload { rule { id status } } ${ERR} } }`,
      { id: instance!.id },
    );
    ruleId = payload(rule.addFirewallRule, 'rule').id;
    expect(await until(async () => (await fetchThroughForward()) === 'timeout')).toBe(true);
    await converged();
    expect(await fetchThroughForward()).toBe('timeout');
    const deleted = await api(`mutation ($id: ID!) { deleteFirewallRule(input: { ruleId: $id }) { __typename ${ERR} } }`, { id: ruleId });
    expect(deleted.deleteFirewallRule.__typename).toBe('DeleteFirewallRulePayload');
    expect(await eventually(() => fetchThroughForward(), 15_000)).toBe(`got:${BODY}`);
    // a rule that stays, for the reclaim at the end (it allows, so traffic is unaffected)
    const kept = await api(
      `mutation ($id: ID!) { addFirewallRule(input: { instanceId: $id, direction: INBOUND, protocol: TCP, ports: "8080", action: ALLOW, priority: 20 }) { ... on AddFirewallRulePayload { rule { id } } ${ERR} } }`,
      { id: instance!.id },
    );
    ruleId = payload(kept.addFirewallRule, 'rule').id;
    await converged();
    expect(await fetchThroughForward()).toBe(`got:${BODY}`);
  });

  it('caps the rate into the container with a bandwidth limit (measured with iperf3), and lifts it', async () => {
    // iperf3's server in the container's network namespace: its traffic enters through LXD's veth
    const ns = await lxd!.instanceNamespace(NAME);
    const iperf = spawn('ip', ['netns', 'exec', ns.name, 'iperf3', '-s', '-p', '5201'], { stdio: 'ignore' });
    children.push(iperf);
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
        const out = await lxd!.outside.exec('iperf3', ['-c', LAB_PUBLIC_V4, '-p', '15201', '-t', String(seconds), '-O', '1', '-J'], { timeoutMs: 30_000 });
        return (JSON.parse(out) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second;
      };
      const limited = await measure(3);
      console.log(`[lxd-e2e] ingress limit 20000000 bit/s through the forward, measured ${Math.round(limited)} bit/s (${(limited / 20e6).toFixed(3)})`);
      expect(Math.abs(limited / 20e6 - 1)).toBeLessThanOrEqual(0.15);

      const removed = await api(`mutation ($id: ID!) { removeBandwidthLimit(input: { instanceId: $id }) { __typename } }`, { id: instance!.id });
      expect(removed.removeBandwidthLimit?.__typename ?? 'RemoveBandwidthLimitPayload').toBe('RemoveBandwidthLimitPayload');
      expect(await bandwidthStatus()).toEqual([]);
      await converged();
      const free = await measure(2);
      console.log(`[lxd-e2e] limit removed: measured ${Math.round(free)} bit/s`);
      expect(free).toBeGreaterThan(2 * 20e6);
    } finally {
      iperf.kill('SIGTERM');
    }
  });

  it('adds a second NIC on a second LXD bridge: the plugin hot-plugs it with its address, and the container answers on it', async () => {
    const added = await api(
      `mutation ($id: ID!, $n: String!) { addNic(input: { instanceId: $id, network: $n, allocate: [IPV4] }) { ... on AddNicPayload { added { nic { id name mac network } addresses { id address cidr pool { id } } } } ${ERR} } }`,
      { id: instance!.id, n: network2 },
    );
    const nic = payload(added.addNic, 'added');
    expect(nic.nic.network).toBe(network2);
    expect(nic.addresses[0]).toMatchObject({ address: expect.stringMatching(/^10\.78\.0\.1\d\d$/), pool: { id: pool2Id } });
    const address = nic.addresses[0].address as string;
    const started = Date.now();
    // from LXD's namespace (the second bridge is on-link there): only the new NIC has that address
    expect(await eventually(() => httpOutcome(lxd!.host, `http://${address}:8080/`), 20_000)).toBe(`got:${BODY}`);
    console.log(`[lxd-e2e] second NIC answering ${Date.now() - started} ms after addNic`);
    expect((await converged())?.agent.lastError).toBeNull();
    const device = Object.values((await lxdInstance()).devices).find((d) => d.hwaddr === nic.nic.mac);
    expect(device).toMatchObject({ type: 'nic', network: network2, name: nic.nic.name, 'ipv4.address': address });
    expect((await guestAddresses())[nic.nic.name]).toEqual([`${address}/24`]);
    // the first NIC still answers through the forward, and discovery reports both NICs
    expect(await fetchThroughForward()).toBe(`got:${BODY}`);
    expect(
      await until(async () =>
        (await hostAgent()).agent.discoveredInstances
          .find((i) => i.externalId === NAME)
          ?.nics.some((n) => n.name === nic.nic.name && n.addresses.includes(`${address}/24`)),
      ),
    ).toBe(true);
  });

  it("a container deleted behind Gatehouse's back is reclaimed: instance, forwards, proxy, rule and addresses, with audit entries", async () => {
    const proxy = await api(
      `mutation ($id: ID!) { createWebProxy(input: { instanceId: $id, domain: "web.lxd-e2e.test", targetPort: 8080, tlsMode: NONE }) { ... on CreateWebProxyPayload { webProxy { id } } ${ERR} } }`,
      { id: instance!.id },
    );
    const proxyId = payload(proxy.createWebProxy, 'webProxy').id as string;
    const before = (await instances()).find((i) => i.id === instance!.id)!;
    const addressIds = before.nics.flatMap((n) => n.addresses.map((a) => a.id));
    const addresses = before.nics.map((n) => ({ network: n.network, addresses: n.addresses.map((a) => a.address) }));
    expect(addressIds).toHaveLength(2);
    expect(await fetchThroughForward()).toBe(`got:${BODY}`);

    await lxd!.destroyInstance(NAME);
    const removed = Date.now();
    expect(await until(async () => !(await instances()).some((i) => i.id === instance!.id), 30 * DISCOVER_MS)).toBe(true);
    console.log(`[lxd-e2e] deleted container reclaimed ${Date.now() - removed} ms after its deletion`);

    for (const id of forwards) expect(await forwardStatus(id)).toBeNull();
    expect((await api(`query ($id: ID!) { webProxy(id: $id) { id } }`, { id: proxyId })).webProxy).toBeNull();
    expect(await fetchThroughForward()).not.toMatch(/^got:/);

    // audit: everything by the system actor
    const expectAudit = async (objectId: string, action: string) => {
      const entries = await audit(objectId);
      expect(
        entries.find((e) => e.action === action),
        `${action} of ${objectId} in ${JSON.stringify(entries.map((e) => e.action))}`,
      ).toMatchObject({ actorUserId: SYSTEM_ACTOR });
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
    // nothing of the instance is left in LXD's namespace: no forward, no firewall chain of it
    expect(
      await until(async () => {
        const table = await lxd!.host.exec('nft', ['list', 'table', 'inet', 'gatehouse']).catch(() => '');
        return !/18080|15201/.test(table) && !/fw_(in|out)_/.test(table);
      }),
    ).toBe(true);
    expect((await converged())?.agent.lastError).toBeNull();
  });
});
