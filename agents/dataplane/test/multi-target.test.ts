/**
 * One public port, several targets (issue 19, item 3), with real traffic in a lab: a forward on
 * 198.51.100.1:10080 balanced over three instances (each an own namespace behind the host, each
 * answering with its name). 300 connections give each target 100 ± 20 (weighted turns: exactly
 * 100 each); weights 1:2:3 give 50/100/150; with source affinity every connection of one client
 * reaches one target; a target left out of the document (its instance stopped: the controller
 * leaves it out) gets nothing and its share goes to the others. Each change is incremental and
 * reads back without drift; the forward's counter still counts every connection.
 */
import type { DesiredBalance, DesiredState } from '@gatehouse/sdk';
import { NetnsLab, eventually, labAvailable, tcpConnectRate, tcpOutcome, tcpServer, type LabNamespace, type LabServer } from '@gatehouse/sdk/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Dataplane } from '../src/dataplane.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await labAvailable();

const VMS = [1, 2, 3].map((n) => ({
  id: `e0000000-0000-4000-8000-00000000000${n}`,
  name: `vm${n}`,
  address: `10.0.${n}.5`,
}));
const FORWARD_ID = 'e1000000-0000-4000-8000-0000000000b1';

/** The lab host's state: three instances, the forward on the first balanced as `balance` says. */
function state(revision: number, balance: DesiredBalance | null): DesiredState {
  return {
    apiVersion: 1,
    hostId: 'h',
    hostName: 'lab',
    revision,
    publicAddresses: ['198.51.100.1'],
    instances: VMS.map((vm, i) => ({
      id: vm.id,
      name: vm.name,
      externalId: null,
      nics: [
        {
          id: `e0000000-0000-4000-8000-0000000000f${i + 1}`,
          name: 'eth0',
          mac: `02:00:00:00:00:0${i + 1}`,
          network: 'br',
          addresses: [{ address: vm.address, prefixLength: 24, delegated: false, gateway: `10.0.${i + 1}.1`, dns: [] }],
        },
      ],
      firewall: { inboundPolicy: 'allow', outboundPolicy: 'allow', rules: [] },
      bandwidth: [],
      portForwards:
        i === 0
          ? [
              {
                id: FORWARD_ID,
                protocol: 'tcp',
                hostAddress: null,
                hostPorts: { start: 10080, end: 10080 },
                targetAddress: balance?.targets[0]?.address ?? vm.address,
                targetPorts: { start: 8080, end: 8080 },
                sourceCidrs: [],
                ...(balance ? { balance } : {}),
              },
            ]
          : [],
    })),
  };
}

const targets = (weights: number[], only = [0, 1, 2]) => only.map((i) => ({ instanceId: VMS[i]!.id, address: VMS[i]!.address, weight: weights[i]! }));

describe.skipIf(!available && !REQUIRE_SYSTEM)('a forward balanced over several targets, under real traffic', () => {
  const lab = new NetnsLab();
  let host: LabNamespace;
  let client: LabNamespace;
  const servers: LabServer[] = [];
  let dp: Dataplane;
  let revision = 1;

  /** `count` connections at 100/s from `from` (an address of the client), counted by answering target. */
  async function spread(count: number, from = '198.51.100.2'): Promise<Record<string, number>> {
    const { counts } = await tcpConnectRate(client, '198.51.100.1', 10080, { rate: 100, seconds: count / 100, localAddress: from, timeoutMs: 2000 });
    return counts;
  }

  beforeAll(async () => {
    host = await lab.namespace('host');
    client = await lab.namespace('cli');
    const { ifA } = await lab.link(client, '198.51.100.2/24', host, '198.51.100.1/24');
    // more client addresses, for affinity
    for (let n = 10; n < 22; n++) await client.exec('ip', ['addr', 'add', `198.51.100.${n}/24`, 'dev', ifA]);
    for (const [i, vm] of VMS.entries()) {
      const ns = await lab.namespace(vm.name);
      await lab.link(host, `10.0.${i + 1}.1/24`, ns, `${vm.address}/24`);
      await ns.exec('ip', ['route', 'add', 'default', 'via', `10.0.${i + 1}.1`]);
      servers.push(tcpServer(ns, 8080, vm.name));
    }
    await host.exec('sysctl', ['-w', 'net.ipv4.ip_forward=1']);
    for (const vm of VMS) expect(await eventually(() => tcpOutcome(host, vm.address, 8080))).toBe(`got:${vm.name}`);
    dp = new Dataplane({ netns: host.name });
    await dp.apply(state(revision++, null));
    expect(await eventually(() => tcpOutcome(client, '198.51.100.1', 10080))).toBe('got:vm1');
  });
  afterAll(async () => {
    for (const s of servers) s.stop();
    await dp?.close();
    await lab.cleanup();
  });

  it('spreads 300 connections over 3 targets, 100 ± 20 each', async () => {
    // a forward's targets are rules of prerouting: an incremental change, no table replace
    expect(await dp.apply(state(revision++, { targets: targets([1, 1, 1]), sourceAffinity: false }))).toMatchObject({ mode: 'incremental' });
    expect(await dp.drift()).toEqual([]);
    const before = (await dp.counters()).forwards.get(FORWARD_ID)?.packets ?? 0;
    const counts = await spread(300);
    console.log(`3 targets, weights 1:1:1, 300 connections: ${JSON.stringify(counts)}`);
    for (const vm of VMS) expect(Math.abs((counts[`got:${vm.name}`] ?? 0) - 100)).toBeLessThanOrEqual(20);
    expect(Object.values(counts).reduce((a, b) => a + b, 0)).toBe(300);
    // the forward's counter counts its packets whatever target they went to (a few per connection)
    expect((await dp.counters()).forwards.get(FORWARD_ID)!.packets - before).toBeGreaterThanOrEqual(300);
  });

  it('gives weights 1:2:3 their shares of 300 connections', async () => {
    expect(await dp.apply(state(revision++, { targets: targets([1, 2, 3]), sourceAffinity: false }))).toMatchObject({ mode: 'incremental' });
    expect(await dp.drift()).toEqual([]);
    const counts = await spread(300);
    console.log(`3 targets, weights 1:2:3, 300 connections: ${JSON.stringify(counts)}`);
    expect(Math.abs((counts['got:vm1'] ?? 0) - 50)).toBeLessThanOrEqual(10);
    expect(Math.abs((counts['got:vm2'] ?? 0) - 100)).toBeLessThanOrEqual(20);
    expect(Math.abs((counts['got:vm3'] ?? 0) - 150)).toBeLessThanOrEqual(30);
  });

  it('keeps each client on one target with source affinity, and spreads the clients', async () => {
    expect(await dp.apply(state(revision++, { targets: targets([1, 1, 1]), sourceAffinity: true }))).toMatchObject({ mode: 'incremental' });
    expect(await dp.drift()).toEqual([]);
    const chosen = new Set<string>();
    for (let n = 10; n < 22; n++) {
      const counts = await spread(20, `198.51.100.${n}`);
      // every one of the client's 20 connections reached the same target
      expect(Object.keys(counts)).toHaveLength(1);
      expect(Object.values(counts)[0]).toBe(20);
      chosen.add(Object.keys(counts)[0]!);
    }
    console.log(`source affinity: 12 clients × 20 connections reached ${[...chosen].sort().join(', ')}`);
    expect(chosen.size).toBeGreaterThan(1);
  });

  it("moves a stopped instance's share to the other targets, and back when it runs again", async () => {
    // the controller leaves the target of a stopped instance out of the document
    expect(await dp.apply(state(revision++, { targets: targets([1, 1, 1], [0, 1]), sourceAffinity: false }))).toMatchObject({ mode: 'incremental' });
    expect(await dp.drift()).toEqual([]);
    const counts = await spread(300);
    console.log(`vm3 stopped, 300 connections: ${JSON.stringify(counts)}`);
    expect(counts['got:vm3']).toBeUndefined();
    expect(Math.abs((counts['got:vm1'] ?? 0) - 150)).toBeLessThanOrEqual(30);
    expect(Math.abs((counts['got:vm2'] ?? 0) - 150)).toBeLessThanOrEqual(30);
    expect(await dp.apply(state(revision++, { targets: targets([1, 1, 1]), sourceAffinity: false }))).toMatchObject({ mode: 'incremental' });
    const again = await spread(30);
    expect(Object.keys(again).sort()).toEqual(['got:vm1', 'got:vm2', 'got:vm3']);
  });

  it('goes back to one target when the balance is removed', async () => {
    expect(await dp.apply(state(revision++, null))).toMatchObject({ mode: 'incremental' });
    expect(await dp.drift()).toEqual([]);
    expect(await spread(30)).toEqual({ 'got:vm1': 30 });
  });
});
