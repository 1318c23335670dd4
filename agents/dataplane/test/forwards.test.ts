/**
 * Port forwards rendered from a desired-state document and applied in a lab: a client namespace
 * reaches an instance namespace through the host namespace's public address, by real TCP.
 */
import type { DesiredState } from '@gatehouse/sdk';
import { NetnsLab, labAvailable, type LabNamespace } from '@gatehouse/sdk/testkit';
import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyNft, listTable, replaceTable } from '../src/nft.js';
import { changedForwards, forwardElements, renderRuleset } from '../src/render.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await labAvailable();

type Firewall = DesiredState['instances'][number]['firewall'];
const OPEN: Firewall = { inboundPolicy: 'allow', outboundPolicy: 'allow', rules: [] };

function stateWith(forwards: DesiredState['instances'][number]['portForwards'], revision = 1, firewall: Firewall = OPEN): DesiredState {
  return {
    apiVersion: 1,
    hostId: 'h',
    hostName: 'lab-host',
    revision,
    publicAddresses: ['198.51.100.1'],
    instances: [
      {
        id: 'i',
        name: 'vm',
        externalId: null,
        nics: [
          {
            id: 'n',
            name: 'eth0',
            mac: '02:00:00:00:00:05',
            network: 'br',
            addresses: [{ address: '10.0.0.5', prefixLength: 24, delegated: false, gateway: '10.0.0.1', dns: [] }],
          },
        ],
        firewall,
        bandwidth: [],
        portForwards: forwards,
      },
    ],
  };
}

const ssh = {
  id: 'f1',
  protocol: 'tcp' as const,
  hostAddress: null,
  hostPorts: { start: 10022, end: 10022 },
  targetAddress: '10.0.0.5',
  targetPorts: { start: 2222, end: 2222 },
  sourceCidrs: [],
};
const range = {
  id: 'f2',
  protocol: 'both' as const,
  hostAddress: '198.51.100.1',
  hostPorts: { start: 10100, end: 10102 },
  targetAddress: '10.0.0.5',
  targetPorts: { start: 3000, end: 3002 },
  sourceCidrs: [],
};

it('expands forwards into one map element per address, protocol and port', () => {
  const elements = forwardElements(stateWith([ssh, range]), 4);
  expect(elements).toHaveLength(1 + 2 * 3);
  expect(elements[0]).toEqual({ key: { concat: ['198.51.100.1', 6, 10022] }, address: '10.0.0.5', port: 2222, counter: 'fwd_f1' });
  expect(elements).toContainEqual({ key: { concat: ['198.51.100.1', 17, 10102] }, address: '10.0.0.5', port: 3002, counter: 'fwd_f2' });
  expect(forwardElements(stateWith([ssh]), 6)).toEqual([]);
});

it('finds the forwards whose elements changed between two states, by id, wherever they moved', () => {
  const moved = stateWith([ssh, range]);
  moved.instances.push({ ...moved.instances[0]!, id: 'j', portForwards: [ssh] });
  moved.instances[0]!.portForwards = [range];
  expect(changedForwards(stateWith([ssh, range]), moved)).toEqual({ before: [], after: [] });
  const retargeted = { ...ssh, targetPorts: { start: 2223, end: 2223 } };
  expect(changedForwards(stateWith([ssh, range]), stateWith([retargeted, range]))).toEqual({ before: [ssh], after: [retargeted] });
  expect(changedForwards(stateWith([ssh, range]), stateWith([range, { ...ssh, id: 'f3' }]))).toEqual({ before: [ssh], after: [{ ...ssh, id: 'f3' }] });
  // a patched document shares unchanged forwards' objects: one added among them is the only change
  const added = { ...ssh, id: 'f4', hostPorts: { start: 2300, end: 2300 } };
  expect(changedForwards(stateWith([ssh, range]), stateWith([ssh, added, range]))).toEqual({ before: [], after: [added] });
  // a new public address changes every forward without its own host address
  expect(changedForwards(stateWith([ssh]), { ...stateWith([ssh]), publicAddresses: ['198.51.100.9'] })).toBeUndefined();
});

/** What a TCP connection from `from` to host:port reads back, or null when it cannot connect. */
async function fetchTcp(from: LabNamespace, host: string, port: number): Promise<string | null> {
  const out = await tcpOutcome(from, host, port);
  return out.startsWith('got:') ? out.slice(4) : null;
}

/** `got:<data>`, `refused` (a reset or ICMP unreachable came back) or `timeout` (silently dropped). */
async function tcpOutcome(from: LabNamespace, host: string, port: number): Promise<string> {
  const code = `const s=require('net').connect({host:${JSON.stringify(host)},port:${port},timeout:800});let d='';s.on('data',b=>d+=b);s.on('end',()=>console.log('got:'+d));s.on('timeout',()=>{console.log('timeout');s.destroy()});s.on('error',e=>console.log(e.code==='ECONNREFUSED'||e.code==='EHOSTUNREACH'?'refused':'error:'+e.code))`;
  return (await from.exec(process.execPath, ['-e', code])).trim();
}

describe.skipIf(!available && !REQUIRE_SYSTEM)('forwards through the host namespace', () => {
  const lab = new NetnsLab();
  let host: LabNamespace;
  let client: LabNamespace;
  let vm: LabNamespace;
  const servers: ChildProcess[] = [];

  beforeAll(async () => {
    host = await lab.namespace('host');
    client = await lab.namespace('cli');
    vm = await lab.namespace('vm');
    await lab.link(client, '198.51.100.2/24', host, '198.51.100.1/24');
    await lab.link(host, '10.0.0.1/24', vm, '10.0.0.5/24');
    await vm.exec('ip', ['route', 'add', 'default', 'via', '10.0.0.1']);
    await host.exec('sysctl', ['-w', 'net.ipv4.ip_forward=1']);
    for (const port of [2222, 3001]) {
      const child = spawn(
        'ip',
        ['netns', 'exec', vm.name, process.execPath, '-e', `require('net').createServer(c=>{c.on('error',()=>{});c.end('vm:${port}')}).listen(${port})`],
        { stdio: 'ignore' },
      );
      servers.push(child);
    }
    for (let i = 0; i < 50 && (await fetchTcp(host, '10.0.0.5', 2222)) === null; i++) await new Promise((r) => setTimeout(r, 100));
  });
  afterAll(async () => {
    for (const s of servers) s.kill('SIGTERM');
    await lab.cleanup();
  });

  it('carries TCP from the client to the instance through a forwarded port and a port range', async () => {
    expect(await fetchTcp(client, '198.51.100.1', 10022)).toBeNull();
    await applyNft(replaceTable('inet', 'gatehouse', renderRuleset(stateWith([ssh, range]))), { netns: host.name });
    expect(await fetchTcp(client, '198.51.100.1', 10022)).toBe('vm:2222');
    expect(await fetchTcp(client, '198.51.100.1', 10101)).toBe('vm:3001');
  });

  it('re-applies the same state without changing the ruleset, and a removed forward stops carrying traffic', async () => {
    const strip = (o: unknown) => JSON.stringify(o).replace(/"(handle|packets|bytes)":\d+/g, '');
    const before = strip(await listTable('inet', 'gatehouse', { netns: host.name }));
    await applyNft(replaceTable('inet', 'gatehouse', renderRuleset(stateWith([ssh, range]))), { netns: host.name });
    expect(strip(await listTable('inet', 'gatehouse', { netns: host.name }))).toBe(before);
    await applyNft(replaceTable('inet', 'gatehouse', renderRuleset(stateWith([range], 2))), { netns: host.name });
    expect(await fetchTcp(client, '198.51.100.1', 10022)).toBeNull();
    expect(await fetchTcp(client, '198.51.100.1', 10101)).toBe('vm:3001');
  });

  it('applies an instance firewall in priority order: allow, reject and drop, with a default policy', async () => {
    const rule = (id: string, priority: number, ports: [number, number], action: 'allow' | 'reject' | 'drop', sourceCidr: string | null = null) => ({
      id,
      direction: 'inbound' as const,
      protocol: 'tcp' as const,
      sourceCidr,
      destinationCidr: null,
      ports: [{ start: ports[0], end: ports[1] }],
      action,
      priority,
    });
    const apply = (firewall: Firewall, revision: number) =>
      applyNft(replaceTable('inet', 'gatehouse', renderRuleset(stateWith([ssh, range], revision, firewall))), { netns: host.name });
    await apply(
      {
        inboundPolicy: 'drop',
        outboundPolicy: 'allow',
        rules: [rule('r1', 10, [3000, 3002], 'reject'), rule('r2', 20, [2222, 2222], 'allow', '198.51.100.0/24')],
      },
      3,
    );
    expect(await tcpOutcome(client, '198.51.100.1', 10022)).toBe('got:vm:2222');
    expect(await tcpOutcome(client, '198.51.100.1', 10101)).toBe('refused');
    // the allow rule no longer matches the client: the default policy drops silently
    await apply(
      {
        inboundPolicy: 'drop',
        outboundPolicy: 'allow',
        rules: [rule('r1', 10, [3000, 3002], 'drop'), rule('r2', 20, [2222, 2222], 'allow', '203.0.113.0/24')],
      },
      4,
    );
    expect(await tcpOutcome(client, '198.51.100.1', 10022)).toBe('timeout');
    expect(await tcpOutcome(client, '198.51.100.1', 10101)).toBe('timeout');
    // a lower priority number wins: allow before drop for the same port
    await apply({ inboundPolicy: 'reject', outboundPolicy: 'allow', rules: [rule('r3', 5, [3001, 3001], 'allow'), rule('r1', 10, [3000, 3002], 'drop')] }, 5);
    expect(await tcpOutcome(client, '198.51.100.1', 10101)).toBe('got:vm:3001');
    expect(await tcpOutcome(client, '198.51.100.1', 10022)).toBe('refused');
  });

  it('lets only the allowed sources use a forward with a source list', async () => {
    const only = (cidrs: string[], revision: number) =>
      applyNft(replaceTable('inet', 'gatehouse', renderRuleset(stateWith([{ ...ssh, sourceCidrs: cidrs }, range], revision))), { netns: host.name });
    await only(['203.0.113.0/24', '2001:db8::/32'], 6);
    expect(await tcpOutcome(client, '198.51.100.1', 10022)).toBe('timeout');
    expect(await tcpOutcome(client, '198.51.100.1', 10101)).toBe('got:vm:3001');
    await only(['198.51.100.0/24'], 7);
    expect(await tcpOutcome(client, '198.51.100.1', 10022)).toBe('got:vm:2222');
  });

  it("lets an instance reach its own forward on the host's public address (hairpin)", async () => {
    await applyNft(replaceTable('inet', 'gatehouse', renderRuleset(stateWith([ssh, range], 8))), { netns: host.name });
    expect(await tcpOutcome(vm, '198.51.100.1', 10022)).toBe('got:vm:2222');
  });
});
