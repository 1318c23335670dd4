/**
 * The Proxmox lab: a PVE node made of network namespaces, behind the schema-enforcing test
 * server. The node's namespace holds the bridge `vmbr0` (10.77.0.1/24) and, for every NIC of a
 * running guest, the host side of a veth pair named as PVE names it (`tap<vmid>i<n>` for QEMU,
 * `veth<vmid>i<n>` for LXC) on that bridge; the other side is in the guest's own namespace with
 * the NIC's MAC (LXC: its name and `ip=`/`gw=` too, as PVE sets them; QEMU: the guest configures
 * its address itself). A client namespace reaches the node's public address 198.51.100.1. The API
 * listens on 127.0.0.1 of the test's own namespace. `cleanup` removes exactly what the lab made.
 */
import { spawn } from 'node:child_process';
import { run } from '@gatehouse/sdk';
import { NetnsLab, labAvailable, tcpServer, udpServer, type HarnessInstance, type HarnessNic, type LabNamespace, type LabServer } from '@gatehouse/sdk/testkit';
import { formatLxcNic, formatQemuNic, guestNics, hostDevice, type GuestNic } from '../property-string.js';
import { PveTestServer, type Guest, type GuestBacking, type GuestInterface } from './api-server.js';
import { PveSchema } from './schema.js';

/** The subnet of the lab's bridge. */
export const LAB_V4_PREFIX = '10.77.0.';
/** The node's public address as the client reaches it. */
export const LAB_PUBLIC_V4 = '198.51.100.1';
/** The lab's API token and secret (all privileges). */
export const LAB_TOKEN = { tokenId: 'gatehouse@pve!agent', secret: '6f0c2a7e-3d1b-4c55-9a0e-7b2d9c4e1f00' };

/** Whether the lab can run: root with `ip netns`, and iperf3 for the shaping checks. */
export async function pveLabAvailable(): Promise<boolean> {
  if (!(await labAvailable())) return false;
  return run('iperf3', ['--version']).then(
    () => true,
    () => false,
  );
}

/** Guests' NICs as veths between the node's namespace and each guest's. */
class NetnsBacking implements GuestBacking {
  readonly guestNamespaces = new Map<number, LabNamespace>();

  constructor(
    private readonly lab: NetnsLab,
    private readonly node: LabNamespace,
  ) {}

  async hasBridge(_node: string, bridge: string): Promise<boolean> {
    const links = JSON.parse(await this.node.exec('ip', ['-j', 'link', 'show', 'type', 'bridge'])) as { ifname: string }[];
    return links.some((l) => l.ifname === bridge);
  }

  async namespaceOf(vmid: number): Promise<LabNamespace> {
    let ns = this.guestNamespaces.get(vmid);
    if (!ns) {
      ns = await this.lab.namespace(`g${vmid}`);
      this.guestNamespaces.set(vmid, ns);
    }
    return ns;
  }

  async plug(guest: Guest, nic: GuestNic): Promise<void> {
    const ns = await this.namespaceOf(guest.vmid);
    const device = hostDevice(guest.type, guest.vmid, nic.index);
    const inside = nic.name ?? `eth${nic.index}`;
    await run('ip', ['link', 'add', device, 'netns', this.node.name, 'type', 'veth', 'peer', 'name', inside, 'netns', ns.name]);
    if (nic.bridge) await this.node.exec('ip', ['link', 'set', device, 'master', nic.bridge]);
    await this.node.exec('ip', ['link', 'set', device, 'up']);
    await ns.exec('ip', ['link', 'set', inside, 'address', nic.mac]);
    if (nic.raw.link_down !== '1') await ns.exec('ip', ['link', 'set', inside, 'up']);
    // PVE configures an LXC NIC's static addresses (QEMU guests do their own)
    for (const cidr of nic.addresses) {
      const v6 = cidr.includes(':');
      await ns.exec('ip', [...(v6 ? ['-6'] : []), 'addr', 'add', cidr, 'dev', inside, ...(v6 ? ['nodad'] : [])]);
    }
    for (const gw of [nic.raw.gw, nic.raw.gw6]) {
      if (gw) await ns.exec('ip', [...(gw.includes(':') ? ['-6'] : []), 'route', 'replace', 'default', 'via', gw, 'dev', inside]);
    }
  }

  async unplug(guest: Guest, index: number): Promise<void> {
    await this.node.exec('ip', ['link', 'del', hostDevice(guest.type, guest.vmid, index)]).catch(() => undefined);
  }

  async interfaces(guest: Guest): Promise<GuestInterface[]> {
    const ns = this.guestNamespaces.get(guest.vmid);
    if (!ns) return [];
    const links = JSON.parse(await ns.exec('ip', ['-j', 'addr', 'show'])) as {
      ifname: string;
      address?: string;
      addr_info?: { family: string; local: string; prefixlen: number }[];
    }[];
    return links
      .filter((l) => l.ifname !== 'lo')
      .map((l) => ({
        name: l.ifname,
        mac: l.address ?? '',
        addresses: (l.addr_info ?? []).map((a) => ({
          address: a.local,
          prefix: a.prefixlen,
          family: a.family === 'inet6' ? ('ipv6' as const) : ('ipv4' as const),
        })),
      }));
  }

  async stop(guest: Guest): Promise<void> {
    for (const nic of guestNics(guest.type, guest.config)) await this.unplug(guest, nic.index);
  }
}

/** The lab: node and client namespaces, the API server, and guests. */
export class PveLab {
  readonly lab = new NetnsLab();
  node!: LabNamespace;
  client!: LabNamespace;
  server!: PveTestServer;
  private backing!: NetnsBacking;
  private nextVmid = 100;

  /** Starts everything; cleans up what it made when a step fails. */
  static async start(): Promise<PveLab> {
    const lab = new PveLab();
    try {
      lab.node = await lab.lab.namespace('node');
      lab.client = await lab.lab.namespace('cli');
      await lab.lab.link(lab.client, '198.51.100.2/24', lab.node, `${LAB_PUBLIC_V4}/24`);
      await lab.node.exec('ip', ['link', 'add', 'vmbr0', 'type', 'bridge']);
      await lab.node.exec('ip', ['addr', 'add', `${LAB_V4_PREFIX}1/24`, 'dev', 'vmbr0']);
      await lab.node.exec('ip', ['link', 'set', 'vmbr0', 'up']);
      lab.backing = new NetnsBacking(lab.lab, lab.node);
      lab.server = new PveTestServer(PveSchema.load(), lab.backing, { nodes: ['pve1'] });
      lab.server.addToken(LAB_TOKEN.tokenId, LAB_TOKEN.secret, '*');
      await lab.server.start();
      return lab;
    } catch (err) {
      await lab.cleanup();
      throw err;
    }
  }

  /** The plugin configuration that reaches this lab (pinned fingerprint, the node's namespace). */
  pluginConfig(extra: Record<string, unknown> = {}): Record<string, unknown> {
    return {
      url: this.server.url,
      ...LAB_TOKEN,
      fingerprint: this.server.fingerprint,
      node: 'pve1',
      hostNetns: this.node.name,
      taskTimeoutMs: 10_000,
      ...extra,
    };
  }

  /**
   * Creates a running guest with these NICs on `vmbr0`, as an admin would (QEMU: virtio NICs, the
   * guest agent on, the guest configuring its own addresses; LXC: `ip=`/`gw=` set by PVE).
   */
  async createGuest(
    type: 'qemu' | 'lxc',
    name: string,
    nics: HarnessNic[],
    options: { hotplug?: string } = {},
  ): Promise<HarnessInstance & { vmid: number; namespace: LabNamespace }> {
    const vmid = this.nextVmid++;
    const config: Record<string, string> =
      type === 'qemu' ? { name, agent: '1', cores: '1', ...(options.hotplug ? { hotplug: options.hotplug } : {}) } : { hostname: name, cores: '1' };
    nics.forEach((nic, i) => {
      config[`net${i}`] =
        type === 'qemu'
          ? formatQemuNic({ model: 'virtio', mac: nic.mac, bridge: nic.network })
          : formatLxcNic({ name: nic.name, mac: nic.mac, bridge: nic.network, ip: `${nic.address}/${nic.prefixLength}`, gw: nic.gateway });
    });
    await this.server.addGuest({ vmid, type, node: 'pve1', status: 'running', config });
    const ns = await this.backing.namespaceOf(vmid);
    if (type === 'qemu') {
      for (const [i, nic] of nics.entries()) {
        await ns.exec('ip', ['addr', 'add', `${nic.address}/${nic.prefixLength}`, 'dev', `eth${i}`]);
        if (i === 0) await ns.exec('ip', ['route', 'replace', 'default', 'via', nic.gateway]);
      }
    }
    return {
      vmid,
      namespace: ns,
      externalId: String(vmid),
      tcpServer: async (port, reply) => tcpServer(ns, port, reply),
      udpServer: async (port, reply) => udpServer(ns, port, reply),
      iperf3Server: async (port): Promise<LabServer> => {
        const child = spawn('ip', ['netns', 'exec', ns.name, 'iperf3', '-s', '-p', String(port)], { stdio: 'ignore' });
        return { process: child, stop: () => child.kill('SIGTERM') };
      },
    };
  }

  /** The namespace of a guest (its NICs' inner sides). */
  guestNamespace(vmid: number): Promise<LabNamespace> {
    return this.backing.namespaceOf(vmid);
  }

  /** Deletes a guest behind Gatehouse's back; succeeds when already gone. */
  async destroyGuest(externalId: string): Promise<void> {
    await this.server.destroyGuest(Number(externalId));
  }

  /** Stops the API server and deletes the namespaces (with every veth). */
  async cleanup(): Promise<void> {
    await this.server?.close();
    await this.lab.cleanup();
  }
}
