/**
 * The Proxmox plugin against the SDK's conformance kit, as root, with the lab's PVE (the
 * schema-enforcing test server) and a node made of network namespaces (see src/test-server/netns-lab.ts):
 *
 * - the traffic tier: instance a is a QEMU VM, b an LXC container, each with a NIC on vmbr0
 *   backed by a real tap/veth; forwards, firewalls and shaping are measured with real packets;
 * - the contract tier: two guests without NICs, so every apply hot-plugs the NICs through the
 *   PVE API (QEMU's asynchronous call and LXC's) and the empty state takes them back.
 *
 * Foreign state that must not change: an admin's nft table and a veth with a qdisc in the node's
 * namespace, and every guest config apart from Gatehouse's tags and the NICs it added.
 */
import { contractSuite, driverConformance, type ConformanceHarness, type ContractHarness } from '@gatehouse/sdk/testkit';
import plugin, { NIC_TAG, OWNER_TAG, guestNics } from '../src/index.js';
import { LAB_PUBLIC_V4, LAB_V4_PREFIX, PveLab, pveLabAvailable } from '../src/testing.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await pveLabAvailable();
const silent = { debug() {}, info() {}, warn() {}, error() {} };
const ctx = { logger: silent, signal: new AbortController().signal, host: { id: 'h', name: 'h', publicAddresses: [] } };

/** Starts a lab with foreign state beside it. */
async function labWithForeignState(): Promise<PveLab> {
  const lab = await PveLab.start();
  try {
    await lab.node.exec('nft', ['add', 'table', 'ip', 'admin']);
    await lab.node.exec('nft', ['add', 'chain', 'ip', 'admin', 'input', '{ type filter hook input priority 0 ; policy accept ; }']);
    await lab.node.exec('nft', ['add', 'rule', 'ip', 'admin', 'input', 'tcp', 'dport', '9', 'drop']);
    await lab.node.exec('ip', ['link', 'add', 'foreign0', 'type', 'veth', 'peer', 'name', 'foreign1']);
    await lab.node.exec('tc', ['qdisc', 'add', 'dev', 'foreign0', 'root', 'handle', '1:', 'htb']);
  } catch (err) {
    await lab.cleanup();
    throw err;
  }
  return lab;
}

/** What is not Gatehouse's: the admin's table and veth, and each guest's config without our tags and NICs. */
async function foreignFingerprint(lab: PveLab): Promise<string> {
  const guests = [...lab.server.guests.values()].map((g) => {
    const tags = (g.config.tags ?? '').split(';').filter(Boolean);
    const ours = new Set(tags.filter((t) => t.startsWith(NIC_TAG)).map((t) => `net${t.slice(NIC_TAG.length)}`));
    const config = Object.entries(g.config)
      .filter(([k]) => k !== 'tags' && !ours.has(k))
      .sort();
    return JSON.stringify([g.vmid, g.status, config, tags.filter((t) => !t.startsWith(OWNER_TAG)), guestNics(g.type, g.config).length - ours.size]);
  });
  return [
    await lab.node.exec('nft', ['list', 'table', 'ip', 'admin']),
    await lab.node.exec('tc', ['qdisc', 'show', 'dev', 'foreign0']),
    await lab.node.exec('ip', ['-br', 'link', 'show', 'foreign0']),
    ...guests,
  ].join('\n');
}

const badConfigs = [
  { config: { url: 'http://pve:8006' }, path: 'config.url' },
  { config: 'pve', path: 'config' },
];

async function trafficHarness(): Promise<ConformanceHarness> {
  const lab = await labWithForeignState();
  let created = 0;
  return {
    createDriver: async (config) => plugin.createDriver(config ?? lab.pluginConfig(), ctx),
    badConfigs: [
      ...badConfigs.map((b) => ({ ...b, config: typeof b.config === 'object' ? lab.pluginConfig(b.config) : b.config })),
      { config: lab.pluginConfig({ tokenId: 'gatehouse' }), path: 'config.tokenId' },
      { config: lab.pluginConfig({ caFile: '/etc/pve/pve-root-ca.pem' }), path: 'config.caFile' },
      { config: lab.pluginConfig({ ignoreTls: true }), path: 'config.ignoreTls' },
    ],
    publicAddresses: { v4: LAB_PUBLIC_V4 },
    client: lab.client,
    network: { name: 'vmbr0', v4Prefix: LAB_V4_PREFIX, gateway: `${LAB_V4_PREFIX}1` },
    // a is a QEMU VM, b an LXC container
    createInstance: (name, nics) => lab.createGuest(created++ % 2 === 0 ? 'qemu' : 'lxc', name, nics),
    destroyInstance: (externalId) => lab.destroyGuest(externalId),
    foreignFingerprint: () => foreignFingerprint(lab),
    cleanup: () => lab.cleanup(),
  };
}

async function contractHarness(): Promise<ContractHarness> {
  const lab = await labWithForeignState();
  const a = await lab.createGuest('qemu', 'contract-a', []);
  const b = await lab.createGuest('lxc', 'contract-b', []);
  return {
    createDriver: async () => plugin.createDriver(lab.pluginConfig(), ctx),
    externalIds: { a: a.externalId, b: b.externalId },
    publicAddresses: [LAB_PUBLIC_V4, '2001:db8::1'],
    network: { name: 'vmbr0', v4Prefix: LAB_V4_PREFIX, gateway: `${LAB_V4_PREFIX}1` },
    foreignFingerprint: () => foreignFingerprint(lab),
    cleanup: () => lab.cleanup(),
  };
}

contractSuite('proxmox', contractHarness, { skip: !available && !REQUIRE_SYSTEM });
driverConformance('proxmox', trafficHarness, { skip: !available && !REQUIRE_SYSTEM });
