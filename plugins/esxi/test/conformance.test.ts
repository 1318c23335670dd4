/**
 * The ESXi plugin against the SDK's conformance kit, as root: vcsim plays the ESXi host's API, the
 * lab's namespaces its data path (see src/testing.ts). The contract tier runs first (vcsim and the
 * gateway namespace, no instance namespaces), then the traffic tier with real TCP/UDP through the
 * gateway and iperf3 rates shaped by the port groups' policies.
 */
import { contractSuite, driverConformance, labAvailable, tcpServer, udpServer, type ConformanceHarness, type ContractHarness } from '@gatehouse/sdk/testkit';
import { spawn } from 'node:child_process';
import plugin from '../src/index.js';
import { EsxiLab, LAB_NETWORK, LAB_PUBLIC_V4, LAB_V4_PREFIX, vcsimBuildable } from '../src/testing.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = (await labAvailable()) && vcsimBuildable();
const silent = { debug() {}, info() {}, warn() {}, error() {} };
const ctx = { logger: silent, signal: new AbortController().signal, host: { id: 'h', name: 'h', publicAddresses: [] } };

/** What the plugin must leave alone: an admin's nft table in the gateway, and a port group of the admin's. */
async function addForeignState(lab: EsxiLab): Promise<() => Promise<string>> {
  await lab.gateway.exec('nft', ['add', 'table', 'ip', 'admin']);
  await lab.gateway.exec('nft', ['add', 'chain', 'ip', 'admin', 'input', '{ type filter hook input priority 0 ; policy accept ; }']);
  await lab.gateway.exec('nft', ['add', 'rule', 'ip', 'admin', 'input', 'tcp', 'dport', '9', 'drop']);
  await lab.admin.addPortGroup({
    name: 'admin-backup',
    vlanId: 30,
    vswitchName: 'vSwitch0',
    shaping: { enabled: true, averageBandwidth: 1_000_000, peakBandwidth: 2_000_000, burstSize: 10_000 },
  });
  return async () =>
    [
      await lab.gateway.exec('nft', ['list', 'table', 'ip', 'admin']),
      JSON.stringify((await lab.admin.portGroups()).filter((p) => !p.name.startsWith('gh-'))),
    ].join('\n');
}

async function contractHarness(): Promise<ContractHarness> {
  const lab = await EsxiLab.start();
  try {
    const foreignFingerprint = await addForeignState(lab);
    const [a, b] = await lab.vmIds();
    return {
      createDriver: async () => plugin.createDriver(lab.config(), ctx),
      externalIds: { a: a!, b: b! },
      publicAddresses: [LAB_PUBLIC_V4, '2001:db8::1'],
      network: { name: LAB_NETWORK, v4Prefix: LAB_V4_PREFIX, gateway: `${LAB_V4_PREFIX}1` },
      foreignFingerprint,
      cleanup: () => lab.cleanup(),
    };
  } catch (err) {
    await lab.cleanup();
    throw err;
  }
}

async function trafficHarness(): Promise<ConformanceHarness> {
  const lab = await EsxiLab.start();
  let foreignFingerprint: () => Promise<string>;
  try {
    foreignFingerprint = await addForeignState(lab);
  } catch (err) {
    await lab.cleanup();
    throw err;
  }
  return {
    createDriver: async (config) => plugin.createDriver(config ?? lab.config(), ctx),
    badConfigs: [
      { config: { ...lab.config(), url: 'http://127.0.0.1/sdk' }, path: 'config.url' },
      { config: { ...lab.config(), thumbprint: 'AB:CD' }, path: 'config.thumbprint' },
      { config: { ...lab.config(), caFile: '/etc/ssl/certs/ca-certificates.crt' }, path: 'config.thumbprint' },
      { config: { ...lab.config(), hostNetns: 'a b' }, path: 'config.hostNetns' },
      { config: { ...lab.config(), nicModel: 'e1000' }, path: 'config.nicModel' },
      { config: { ...lab.config(), datastore: 'ds1' }, path: 'config.datastore' },
      { config: 'esxi', path: 'config' },
    ],
    publicAddresses: { v4: LAB_PUBLIC_V4 },
    client: lab.client,
    network: { name: LAB_NETWORK, v4Prefix: LAB_V4_PREFIX, gateway: `${LAB_V4_PREFIX}1` },
    async createInstance(name, nics) {
      const nic = nics[0]!;
      const { externalId, ns } = await lab.createInstance(name, nic);
      return {
        externalId,
        tcpServer: async (port, reply) => tcpServer(ns, port, reply),
        udpServer: async (port, reply) => udpServer(ns, port, reply),
        iperf3Server: async (port) => {
          const child = spawn('ip', ['netns', 'exec', ns.name, 'iperf3', '-s', '-p', String(port)], { stdio: 'ignore' });
          return { process: child, stop: () => child.kill('SIGTERM') };
        },
      };
    },
    destroyInstance: (externalId) => lab.destroyInstance(externalId),
    foreignFingerprint,
    cleanup: () => lab.cleanup(),
  };
}

contractSuite('esxi', contractHarness, { skip: !available && !REQUIRE_SYSTEM });
driverConformance('esxi', trafficHarness, { skip: !available && !REQUIRE_SYSTEM });
