/**
 * Forward diagnosis (`diagnoseForward`) against faults built in a lab, as root: a host namespace
 * with the public address 198.51.100.1, a client beside it, an instance namespace the plugin gives
 * its NIC (10.77.0.5 behind the bridge's 10.77.0.1) with a TCP service on 8080, and the forward
 * 198.51.100.1:10080 → 10.77.0.5:8080. Each test builds one fault, has the client try the forward,
 * expects the diagnosis's verdict with its evidence, and removes the fault.
 */
import { run, type DesiredInstance, type DesiredPortForward, type DesiredState, type ForwardDiagnosis } from '@gatehouse/sdk';
import { NetnsLab, eventually, labAvailable, tcpOutcome, tcpServer, type LabNamespace, type LabServer } from '@gatehouse/sdk/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LinuxDriver } from '../src/index.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await labAvailable();
const silent = { debug() {}, info() {}, warn() {}, error() {} };
const ctx = { logger: silent, signal: new AbortController().signal, host: { id: 'h', name: 'h', publicAddresses: ['198.51.100.1'] } };

const INSTANCE = 'd0000000-0000-4000-8000-000000000001';
const FORWARD: DesiredPortForward = {
  id: 'd1000000-0000-4000-8000-000000000001',
  protocol: 'tcp',
  hostAddress: null,
  hostPorts: { start: 10080, end: 10080 },
  targetAddress: '10.77.0.5',
  targetPorts: { start: 8080, end: 8080 },
  sourceCidrs: [],
};
const RULE = 'd2000000-0000-4000-8000-000000000001';

describe.skipIf(!available && !REQUIRE_SYSTEM)('forward diagnosis against faults built in namespaces', () => {
  const lab = new NetnsLab();
  let host: LabNamespace;
  let client: LabNamespace;
  let vm: LabNamespace;
  let driver: LinuxDriver;
  const servers: LabServer[] = [];
  let revision = 0;

  const instance = (forwards: DesiredPortForward[], firewall?: DesiredInstance['firewall']): DesiredInstance => ({
    id: INSTANCE,
    name: 'vm1',
    externalId: vm.name,
    nics: [
      {
        id: 'd0000000-0000-4000-8000-0000000000f1',
        name: 'eth0',
        mac: '02:00:00:77:00:05',
        network: `${lab.prefix}br`,
        addresses: [{ address: '10.77.0.5', prefixLength: 24, delegated: false, gateway: '10.77.0.1', dns: [] }],
      },
    ],
    firewall: firewall ?? { inboundPolicy: 'allow', outboundPolicy: 'allow', rules: [] },
    bandwidth: [],
    portForwards: forwards,
  });
  const state = (forwards: DesiredPortForward[] = [FORWARD], firewall?: DesiredInstance['firewall']): DesiredState => ({
    apiVersion: 1,
    hostId: 'h',
    hostName: 'lab',
    revision: ++revision,
    publicAddresses: ['198.51.100.1'],
    instances: [instance(forwards, firewall)],
  });
  let applied: DesiredState;
  const apply = async (desired: DesiredState) => {
    const result = await driver.apply(ctx, { desired });
    expect(result.objects.filter((o) => o.error)).toEqual([]);
    applied = desired;
  };
  const diagnose = (forwardId = FORWARD.id, sourceAddress?: string): Promise<ForwardDiagnosis> =>
    driver.diagnoseForward(ctx, { desired: applied, forwardId, sourceAddress });
  const finding = (d: ForwardDiagnosis, check: string) => d.findings.find((f) => f.check === check)!;
  const tryForward = (port = 10080) => tcpOutcome(client, '198.51.100.1', port);

  beforeAll(async () => {
    host = await lab.namespace('host');
    client = await lab.namespace('cli');
    vm = await lab.namespace('vm1');
    await lab.link(client, '198.51.100.2/24', host, '198.51.100.1/24');
    servers.push(tcpServer(vm, 8080, 'vm1'));
    driver = new LinuxDriver({ hostNetns: host.name, namespacePrefix: `${lab.prefix}-vm` });
    await apply(state());
    expect(await eventually(() => tryForward())).toBe('got:vm1');
  }, 60_000);
  afterAll(async () => {
    for (const s of servers) s.stop();
    await driver?.close();
    await lab.cleanup();
  });

  it('answers OK for a working forward, every check passing', async () => {
    expect(await tryForward()).toBe('got:vm1');
    const d = await diagnose();
    expect(d.findings.filter((f) => f.severity !== 'PASS')).toEqual([]);
    expect(d.verdict).toBe('OK');
    expect(d.findings.map((f) => f.check)).toEqual([
      'instance',
      'forward',
      'ipForwarding',
      'foreignRules',
      'sourceAllowList',
      'firewall',
      'target',
      'rateLimit',
      'replyPath',
    ]);
  });

  it('TARGET_NOT_LISTENING: the host is refused on the target port', async () => {
    const idle = { ...FORWARD, id: 'd1000000-0000-4000-8000-000000000002', hostPorts: { start: 10099, end: 10099 }, targetPorts: { start: 8099, end: 8099 } };
    await apply(state([FORWARD, idle]));
    expect(await tryForward(10099)).toBe('refused');
    const d = await diagnose(idle.id);
    expect(d.verdict).toBe('TARGET_NOT_LISTENING');
    expect(finding(d, 'target').detail).toContain('10.77.0.5:8099 was refused');
    await apply(state());
  });

  it('IP_FORWARDING_DISABLED: net.ipv4.ip_forward is 0 on the host', async () => {
    await host.exec('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=0']);
    try {
      expect(await tryForward()).toBe('timeout');
      const d = await diagnose();
      expect(d.verdict).toBe('IP_FORWARDING_DISABLED');
      expect(finding(d, 'ipForwarding')).toMatchObject({ severity: 'FAULT', rule: 'net.ipv4.ip_forward' });
    } finally {
      await host.exec('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1']);
    }
    expect(await eventually(() => tryForward())).toBe('got:vm1');
  });

  it('FIREWALL_DROP: names the instance firewall rule that drops the port, with its counter', async () => {
    await apply(
      state([FORWARD], {
        inboundPolicy: 'allow',
        outboundPolicy: 'allow',
        rules: [
          {
            id: RULE,
            direction: 'inbound',
            protocol: 'tcp',
            sourceCidr: null,
            destinationCidr: null,
            ports: [{ start: 8080, end: 8080 }],
            action: 'drop',
            priority: 100,
          },
        ],
      }),
    );
    expect(await tryForward()).toBe('timeout');
    const d = await diagnose();
    expect(d.verdict).toBe('FIREWALL_DROP');
    const f = finding(d, 'firewall');
    expect(f).toMatchObject({ severity: 'FAULT', objectId: RULE });
    expect(f.packets).toBeGreaterThan(0);
    expect(f.rule).toMatch(/fw_in_.* #1$/);
    // a policy that refuses, with no rule allowing the port, is named too
    await apply(state([FORWARD], { inboundPolicy: 'reject', outboundPolicy: 'allow', rules: [] }));
    expect(await tryForward()).toBe('refused');
    const p = finding(await diagnose(), 'firewall');
    expect(p).toMatchObject({ severity: 'FAULT', verdict: 'FIREWALL_DROP', objectId: INSTANCE });
    expect(p.detail).toContain('inbound policy (reject)');
    expect(p.packets).toBeGreaterThan(0);
    await apply(state());
  });

  it('SOURCE_NOT_ALLOWED: the allow-list dropped the client (counted), and a given source outside it is named', async () => {
    await apply(state([{ ...FORWARD, sourceCidrs: ['203.0.113.0/24'] }]));
    expect(await tryForward()).toBe('timeout');
    const d = await diagnose();
    expect(d.verdict).toBe('SOURCE_NOT_ALLOWED');
    expect(finding(d, 'sourceAllowList').packets).toBeGreaterThan(0);
    const named = finding(await diagnose(FORWARD.id, '198.51.100.2'), 'sourceAllowList');
    expect(named).toMatchObject({ severity: 'FAULT', verdict: 'SOURCE_NOT_ALLOWED' });
    expect(named.detail).toContain('source 198.51.100.2 is not in the allow-list (203.0.113.0/24)');
    expect(finding(await diagnose(FORWARD.id, '203.0.113.9'), 'sourceAllowList').severity).not.toBe('FAULT');
    await apply(state());
  });

  it('RATE_LIMITED: the rate limit rule counted the connections over it', async () => {
    await apply(state([{ ...FORWARD, rateLimit: { perSource: 1, total: null, burst: 1, action: 'reject' } }]));
    const outcomes = [];
    for (let i = 0; i < 8; i++) outcomes.push(await tryForward());
    expect(outcomes).toContain('refused');
    const d = await diagnose();
    expect(d.verdict).toBe('RATE_LIMITED');
    expect(finding(d, 'rateLimit').packets).toBe(outcomes.filter((o) => o === 'refused').length);
    await apply(state());
  });

  it("FOREIGN_RULE_DROP: Docker's iptables FORWARD policy drop, and a fail2ban-style table dropping the client", async () => {
    // what Docker does on start: iptables (nft backend) FORWARD policy DROP
    await host.exec('iptables-nft', ['-P', 'FORWARD', 'DROP']);
    try {
      expect(await tryForward()).toBe('timeout');
      const d = await diagnose();
      expect(d.verdict).toBe('FOREIGN_RULE_DROP');
      expect(d.findings.find((f) => f.verdict === 'FOREIGN_RULE_DROP')).toMatchObject({ severity: 'FAULT', rule: 'ip filter FORWARD' });
    } finally {
      await host.exec('iptables-nft', ['-P', 'FORWARD', 'ACCEPT']);
      await host.exec('nft', ['delete', 'table', 'ip', 'filter']);
    }
    expect(await eventually(() => tryForward())).toBe('got:vm1');
    await host.exec('nft', ['add', 'table', 'inet', 'jail']);
    await host.exec('nft', ['add', 'chain', 'inet', 'jail', 'pre', '{ type filter hook prerouting priority -300 ; policy accept ; }']);
    await host.exec('nft', ['add', 'rule', 'inet', 'jail', 'pre', 'ip', 'saddr', '198.51.100.2', 'counter', 'drop']);
    try {
      expect(await tryForward()).toBe('timeout');
      const d = await diagnose();
      expect(d.verdict).toBe('FOREIGN_RULE_DROP');
      const f = d.findings.find((x) => x.verdict === 'FOREIGN_RULE_DROP')!;
      expect(f.rule).toMatch(/^inet jail pre #\d+$/);
      expect(f.packets).toBeGreaterThan(0);
    } finally {
      await host.exec('nft', ['delete', 'table', 'inet', 'jail']);
    }
  });

  it('REPLY_PATH_BROKEN: the instance answers by another route, so forwarded connections stay unreplied', async () => {
    await vm.exec('ip', ['route', 'replace', 'default', 'via', '10.77.0.99']);
    try {
      expect(await tryForward()).toBe('timeout');
      const d = await diagnose();
      expect(d.verdict).toBe('REPLY_PATH_BROKEN');
      expect(finding(d, 'target').severity).toBe('PASS');
      expect(finding(d, 'replyPath').packets).toBeGreaterThan(0);
    } finally {
      await vm.exec('ip', ['route', 'replace', 'default', 'via', '10.77.0.1']);
      await host.exec('conntrack', ['-F']).catch(() => undefined);
    }
    expect(await eventually(() => tryForward())).toBe('got:vm1');
  });

  it('INSTANCE_STOPPED: the instance is gone from the host after the apply', async () => {
    await run('ip', ['netns', 'del', vm.name]);
    const d = await diagnose();
    expect(d.verdict).toBe('INSTANCE_STOPPED');
    expect(finding(d, 'instance').detail).toContain('no NIC of instance "vm1" is on the host');
  });
});
