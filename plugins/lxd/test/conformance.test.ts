/**
 * The LXD plugin against the SDK's driver conformance kit, as root, with a real LXD daemon running
 * in a lab namespace (see lxd-lab.ts): instances are busybox containers with a NIC on the lab's LXD
 * bridge, the client reaches the host namespace's 198.51.100.1, and LXD's own nft table plus an
 * admin table and a veth with a qdisc are the foreign state the plugin must never touch.
 */
import { driverConformance, type ConformanceHarness } from '@gatehouse/sdk/testkit';
import plugin from '../src/index.js';
import { LAB_PUBLIC_V4, LAB_V4_PREFIX, LxdLab, lxdAvailable } from '../src/testing.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await lxdAvailable();
const silent = { debug() {}, info() {}, warn() {}, error() {} };
const ctx = { logger: silent, signal: new AbortController().signal, host: { id: 'h', name: 'h', publicAddresses: [] } };

async function harness(): Promise<ConformanceHarness> {
  const lxd = await LxdLab.start();
  try {
    // foreign state beside LXD's own table: an admin's table and a veth pair with a qdisc
    await lxd.host.exec('nft', ['add', 'table', 'ip', 'admin']);
    await lxd.host.exec('nft', ['add', 'chain', 'ip', 'admin', 'input', '{ type filter hook input priority 0 ; policy accept ; }']);
    await lxd.host.exec('nft', ['add', 'rule', 'ip', 'admin', 'input', 'tcp', 'dport', '9', 'drop']);
    await lxd.host.exec('ip', ['link', 'add', 'foreign0', 'type', 'veth', 'peer', 'name', 'foreign1']);
    await lxd.host.exec('tc', ['qdisc', 'add', 'dev', 'foreign0', 'root', 'handle', '1:', 'htb']);
  } catch (err) {
    await lxd.cleanup();
    throw err;
  }
  return {
    createDriver: async (config) => plugin.createDriver(config ?? { socket: lxd.client.socketPath, hostNetns: lxd.host.name }, ctx),
    badConfigs: [
      { config: { socket: 'relative/unix.socket' }, path: 'config.socket' },
      { config: { hostNetns: 'a b' }, path: 'config.hostNetns' },
      { config: { timeoutMs: 5 }, path: 'config.timeoutMs' },
      { config: { bridge: 'lxdbr0' }, path: 'config.bridge' },
      { config: 'lxd', path: 'config' },
    ],
    publicAddresses: { v4: LAB_PUBLIC_V4 },
    client: lxd.outside,
    network: { name: lxd.network, v4Prefix: LAB_V4_PREFIX, gateway: `${LAB_V4_PREFIX}1` },
    createInstance: (name, nics) => lxd.createInstance(name, nics),
    destroyInstance: (externalId) => lxd.destroyInstance(externalId),
    foreignFingerprint: async () =>
      [
        await lxd.host.exec('nft', ['list', 'table', 'ip', 'admin']),
        await lxd.host.exec('nft', ['list', 'table', 'inet', 'lxd']),
        await lxd.host.exec('tc', ['qdisc', 'show', 'dev', 'foreign0']),
        await lxd.host.exec('ip', ['-br', 'link', 'show', 'foreign0']),
      ].join('\n'),
    cleanup: () => lxd.cleanup(),
  };
}

driverConformance('lxd', harness, { skip: !available && !REQUIRE_SYSTEM });
