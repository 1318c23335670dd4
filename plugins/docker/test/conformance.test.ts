/**
 * The Docker plugin against the driver conformance kit, as root, with a real dockerd of its own
 * (see src/testing.ts): instances are busybox containers on a user-defined bridge network
 * 10.77.0.0/24 with the kit's addresses and MACs; the plugin runs its dataplane in dockerd's
 * namespace (`hostNetns`). Foreign state that must not change: Docker's own iptables rules, an
 * admin's nft table and a veth pair with a qdisc.
 */
import { spawn } from 'node:child_process';
import { driverConformance, tcpServer, udpServer, type ConformanceHarness } from '@gatehouse/sdk/testkit';
import plugin from '../src/index.js';
import { DockerLab, REQUIRE_SYSTEM, dockerAvailable, silent } from '../src/testing.js';

const available = await dockerAvailable();
const ctx = { logger: silent, signal: new AbortController().signal, host: { id: 'h', name: 'h', publicAddresses: [] } };

async function harness(): Promise<ConformanceHarness> {
  const d = await DockerLab.create();
  try {
    return await build(d);
  } catch (err) {
    await d.cleanup();
    throw err;
  }
}

async function build(d: DockerLab): Promise<ConformanceHarness> {
  const network = `${d.prefix}net`;
  await d.createNetwork(network, '10.77.0.0/24', '10.77.0.1');
  await d.host.exec('nft', ['add', 'table', 'ip', 'admin']);
  await d.host.exec('nft', ['add', 'chain', 'ip', 'admin', 'input', '{ type filter hook input priority 0 ; policy accept ; }']);
  await d.host.exec('nft', ['add', 'rule', 'ip', 'admin', 'input', 'tcp', 'dport', '9', 'drop']);
  await d.host.exec('ip', ['link', 'add', 'foreign0', 'type', 'veth', 'peer', 'name', 'foreign1']);
  await d.host.exec('tc', ['qdisc', 'add', 'dev', 'foreign0', 'root', 'handle', '1:', 'htb']);
  return {
    createDriver: async (config) => plugin.createDriver(config ?? { socketPath: d.socketPath, hostNetns: d.host.name }, ctx),
    badConfigs: [
      { config: { socketPath: 'docker.sock' }, path: 'config.socketPath' },
      { config: { socketPath: 7 }, path: 'config.socketPath' },
      { config: { hostNetns: 'a b' }, path: 'config.hostNetns' },
      { config: { bridge: 'docker0' }, path: 'config.bridge' },
      { config: 'docker', path: 'config' },
    ],
    publicAddresses: { v4: '198.51.100.1' },
    client: d.client,
    network: { name: network, v4Prefix: '10.77.0.', gateway: '10.77.0.1' },
    async createInstance(name, nics) {
      const [first] = nics;
      const container = await d.createContainer(name, { network: first!.network, address: first!.address, mac: first!.mac });
      const ns = await d.namespaceOf(container.id);
      return {
        externalId: container.id,
        tcpServer: async (port, reply) => tcpServer(ns, port, reply),
        udpServer: async (port, reply) => udpServer(ns, port, reply),
        // the host's iperf3 in the container's namespace: the traffic still crosses Docker's veth
        iperf3Server: async (port) => {
          const child = spawn('ip', ['netns', 'exec', ns.name, 'iperf3', '-s', '-p', String(port)], { stdio: 'ignore' });
          return { process: child, stop: () => child.kill('SIGTERM') };
        },
      };
    },
    destroyInstance: (externalId) => d.removeContainer(externalId),
    foreignFingerprint: async () =>
      [
        await d.host.exec('iptables', ['-S']),
        await d.host.exec('iptables', ['-t', 'nat', '-S']),
        await d.host.exec('nft', ['list', 'table', 'ip', 'admin']),
        await d.host.exec('tc', ['qdisc', 'show', 'dev', 'foreign0']),
        await d.host.exec('ip', ['-br', 'link', 'show', 'foreign0']),
      ].join('\n'),
    cleanup: () => d.cleanup(),
  };
}

driverConformance('docker', harness, { skip: !available && !REQUIRE_SYSTEM });
