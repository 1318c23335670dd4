/**
 * The Linux plugin against the driver conformance kit, as root, in a lab: a host namespace (the
 * plugin's hostNetns) with the public address 198.51.100.1, a client namespace beside it, and
 * instance namespaces the plugin gives their NICs itself (veths into a bridge it creates).
 */
import { run } from '@gatehouse/sdk';
import { NetnsLab, driverConformance, labAvailable, tcpServer, udpServer, type ConformanceHarness, type LabNamespace } from '@gatehouse/sdk/testkit';
import { spawn } from 'node:child_process';
import plugin from '../src/index.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await labAvailable();
const silent = { debug() {}, info() {}, warn() {}, error() {} };
const ctx = { logger: silent, signal: new AbortController().signal, host: { id: 'h', name: 'h', publicAddresses: [] } };

async function harness(): Promise<ConformanceHarness> {
  const lab = new NetnsLab();
  try {
    return await build(lab);
  } catch (err) {
    await lab.cleanup();
    throw err;
  }
}

async function build(lab: NetnsLab): Promise<ConformanceHarness> {
  const host = await lab.namespace('host');
  const client = await lab.namespace('cli');
  await lab.link(client, '198.51.100.2/24', host, '198.51.100.1/24');
  // foreign state the plugin must never touch: an admin's table and a veth pair with a qdisc
  await host.exec('nft', ['add', 'table', 'ip', 'admin']);
  await host.exec('nft', ['add', 'chain', 'ip', 'admin', 'input', '{ type filter hook input priority 0 ; policy accept ; }']);
  await host.exec('nft', ['add', 'rule', 'ip', 'admin', 'input', 'tcp', 'dport', '9', 'drop']);
  await host.exec('ip', ['link', 'add', 'foreign0', 'type', 'veth', 'peer', 'name', 'foreign1']);
  await host.exec('tc', ['qdisc', 'add', 'dev', 'foreign0', 'root', 'handle', '1:', 'htb']);
  const namespaces = new Map<string, LabNamespace>();
  return {
    createDriver: async (config) => plugin.createDriver((config ?? { hostNetns: host.name, namespacePrefix: `${lab.prefix}-vm` }) as never, ctx),
    badConfigs: [
      { config: { hostNetns: 'a b' }, path: 'config.hostNetns' },
      { config: { namespacePrefix: 7 }, path: 'config.namespacePrefix' },
      { config: { bridge: 'br0' }, path: 'config.bridge' },
      { config: 'linux', path: 'config' },
    ],
    publicAddresses: { v4: '198.51.100.1' },
    client,
    network: { name: `${lab.prefix}br`, v4Prefix: '10.77.0.', gateway: '10.77.0.1' },
    async createInstance(name) {
      const ns = await lab.namespace(`vm-${name}`);
      namespaces.set(ns.name, ns);
      return {
        externalId: ns.name,
        tcpServer: async (port, reply) => tcpServer(ns, port, reply),
        udpServer: async (port, reply) => udpServer(ns, port, reply),
        iperf3Server: async (port) => {
          const child = spawn('ip', ['netns', 'exec', ns.name, 'iperf3', '-s', '-p', String(port)], { stdio: 'ignore' });
          return { process: child, stop: () => child.kill('SIGTERM') };
        },
      };
    },
    async destroyInstance(externalId) {
      await run('ip', ['netns', 'del', externalId]).catch(() => undefined);
    },
    foreignFingerprint: async () =>
      [
        await host.exec('nft', ['list', 'table', 'ip', 'admin']),
        await host.exec('tc', ['qdisc', 'show', 'dev', 'foreign0']),
        await host.exec('ip', ['-br', 'link', 'show', 'foreign0']),
      ].join('\n'),
    cleanup: () => lab.cleanup(),
  };
}

driverConformance('linux', harness, { skip: !available && !REQUIRE_SYSTEM });
