/**
 * Port forwards rendered from a desired-state document and applied in a lab: a client namespace
 * reaches an instance namespace through the host namespace's public address, by real TCP.
 */
import type { DesiredState } from '@gatehouse/sdk';
import { NetnsLab, labAvailable, type LabNamespace } from '@gatehouse/sdk/testkit';
import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyNft, forwardElements, listTable, renderRuleset, replaceTable } from '../src/index.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await labAvailable();

function stateWith(forwards: DesiredState['instances'][number]['portForwards'], revision = 1): DesiredState {
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
        nics: [],
        firewall: { inboundPolicy: 'allow', outboundPolicy: 'allow', rules: [] },
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
  expect(elements[0]).toEqual({ key: { concat: ['198.51.100.1', 'tcp', 10022] }, address: '10.0.0.5', port: 2222 });
  expect(elements).toContainEqual({ key: { concat: ['198.51.100.1', 'udp', 10102] }, address: '10.0.0.5', port: 3002 });
  expect(forwardElements(stateWith([ssh]), 6)).toEqual([]);
});

/** What a TCP connection from `from` to host:port reads back, or null when it cannot connect. */
async function fetchTcp(from: LabNamespace, host: string, port: number): Promise<string | null> {
  const code = `const s=require('net').connect({host:${JSON.stringify(host)},port:${port},timeout:800});let d='';s.on('data',b=>d+=b);s.on('end',()=>console.log('got:'+d));s.on('timeout',()=>{console.log('none');s.destroy()});s.on('error',()=>console.log('none'))`;
  const out = (await from.exec(process.execPath, ['-e', code])).trim();
  return out.startsWith('got:') ? out.slice(4) : null;
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
    const strip = (o: unknown) => JSON.stringify(o).replace(/"handle":\d+/g, '');
    const before = strip(await listTable('inet', 'gatehouse', { netns: host.name }));
    await applyNft(replaceTable('inet', 'gatehouse', renderRuleset(stateWith([ssh, range]))), { netns: host.name });
    expect(strip(await listTable('inet', 'gatehouse', { netns: host.name }))).toBe(before);
    await applyNft(replaceTable('inet', 'gatehouse', renderRuleset(stateWith([range], 2))), { netns: host.name });
    expect(await fetchTcp(client, '198.51.100.1', 10022)).toBeNull();
    expect(await fetchTcp(client, '198.51.100.1', 10101)).toBe('vm:3001');
  });
});
