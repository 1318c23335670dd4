/**
 * The ESXi plugin's test lab: vcsim (VMware's vSphere API simulator, built by `buildVcsim`) plays
 * the ESXi host's API, and network namespaces play its data path. The gateway is a namespace with
 * the dataplane, a public link to a client namespace, and a private bridge (the VMs' port group,
 * 10.77.0.1/24). Each vcsim VM used by a test is paired, by MAC, with an instance namespace whose
 * veth sits on that bridge. A small vSwitch emulator keeps the pair honest: a veth carries traffic
 * only while vcsim says the VM has a connected NIC with its MAC, and what the NIC's port group's
 * shaping policy says is enforced with tc on what the VM sends — as a standard vSwitch does.
 */
import { NetnsLab, type LabNamespace } from '@gatehouse/sdk/testkit';
import { applyShaping } from '@gatehouse/dataplane';
import { run } from '@gatehouse/sdk';
import { buildVcsim, startVcsim, type Vcsim } from './vcsim.js';
import { readVms } from './inventory.js';
import { VsphereClient, moRef, type PortGroupSpec, type VsphereEndpoint } from './vsphere/index.js';

export { buildVcsim, startVcsim, vcsimBuildable, type Vcsim } from './vcsim.js';

/** The gateway's public address. */
export const LAB_PUBLIC_V4 = '198.51.100.1';
/** The private subnet's prefix (`10.77.0.` + n); the gateway is .1. */
export const LAB_V4_PREFIX = '10.77.0.';
/** The port group the VMs' NICs join (the ESX model's own). */
export const LAB_NETWORK = 'VM Network';

/** One VM paired with an instance namespace. */
interface Pair {
  vm: string;
  ns: LabNamespace;
  /** The veth end on the gateway's bridge. */
  bridgePort: string;
  mac: string;
  state: string;
}

/** The lab. */
export class EsxiLab {
  readonly lab = new NetnsLab();
  /** vcsim's build time in this run (0: cached). */
  buildMs = 0;
  gateway!: LabNamespace;
  client!: LabNamespace;
  sim!: Vcsim;
  admin!: VsphereClient;
  /** The vSwitch emulator's own session. */
  private observer!: VsphereClient;
  private readonly pairs: Pair[] = [];
  private stopped = false;
  private loop: Promise<void> | undefined;
  private vcsimPath = '';

  /** Starts vcsim (with `vms` VMs) and the gateway; `network: false` leaves out namespaces (no root needed then). */
  static async start(options: { vms?: number } = {}): Promise<EsxiLab> {
    const lab = new EsxiLab();
    try {
      const built = await buildVcsim();
      lab.buildMs = built.buildMs;
      lab.vcsimPath = built.path;
      lab.sim = await startVcsim(built.path, { vms: options.vms ?? 4 });
      lab.admin = new VsphereClient(lab.endpoint());
      lab.observer = new VsphereClient(lab.endpoint());
      lab.gateway = await lab.lab.namespace('gw');
      lab.client = await lab.lab.namespace('cli');
      await lab.lab.link(lab.client, '198.51.100.2/24', lab.gateway, `${LAB_PUBLIC_V4}/24`);
      await lab.gateway.exec('ip', ['link', 'add', 'ghbr0', 'type', 'bridge']);
      await lab.gateway.exec('ip', ['addr', 'add', `${LAB_V4_PREFIX}1/24`, 'dev', 'ghbr0']);
      await lab.gateway.exec('ip', ['link', 'set', 'ghbr0', 'up']);
      lab.loop = lab.emulate();
    } catch (err) {
      await lab.cleanup();
      throw err;
    }
    return lab;
  }

  /** How the plugin reaches vcsim (pinned to its certificate). */
  endpoint(): VsphereEndpoint {
    return { url: this.sim.url, username: this.sim.username, password: this.sim.password, tls: { thumbprint: this.sim.thumbprint }, timeoutMs: 10_000 };
  }

  /** The plugin configuration for this lab. */
  config(extra: Record<string, unknown> = {}): Record<string, unknown> {
    return {
      url: this.sim.url.href,
      username: this.sim.username,
      password: this.sim.password,
      thumbprint: this.sim.thumbprint,
      hostNetns: this.gateway.name,
      timeoutMs: 5_000,
      ...extra,
    };
  }

  /** The VMs' morefs, by name order. */
  async vmIds(): Promise<string[]> {
    return (await readVms(this.admin)).map((vm) => vm.ref.value);
  }

  /**
   * Pairs a free VM (or `vm`, which may be paired already: one namespace per NIC) with a new
   * instance namespace holding one veth with `mac` and `address` (default route via `gateway`);
   * returns the VM's moref.
   */
  async createInstance(
    name: string,
    nic: { mac: string; address: string; prefixLength: number; gateway: string },
    options: { vm?: string } = {},
  ): Promise<{ externalId: string; ns: LabNamespace }> {
    const taken = new Set(this.pairs.map((p) => p.vm));
    const vm = options.vm ?? (await this.vmIds()).find((id) => !taken.has(id));
    if (!vm) throw new Error('no free vcsim VM: start the lab with more');
    const ns = await this.lab.namespace(`vm-${name}`);
    const bridgePort = `${this.lab.prefix}p${this.pairs.length}`;
    await run('ip', [
      'link',
      'add',
      'eth0',
      'netns',
      ns.name,
      'address',
      nic.mac.toLowerCase(),
      'type',
      'veth',
      'peer',
      'name',
      bridgePort,
      'netns',
      this.gateway.name,
    ]);
    await ns.exec('ip', ['addr', 'add', `${nic.address}/${nic.prefixLength}`, 'dev', 'eth0']);
    await ns.exec('ip', ['link', 'set', 'eth0', 'up']);
    await ns.exec('ip', ['route', 'add', 'default', 'via', nic.gateway]);
    await this.gateway.exec('ip', ['link', 'set', bridgePort, 'master', 'ghbr0']);
    this.pairs.push({ vm, ns, bridgePort, mac: nic.mac.toLowerCase(), state: '' });
    await this.sync();
    return { externalId: vm, ns };
  }

  /** Destroys a VM in vcsim (powered off first) and its namespaces; succeeds when already gone. */
  async destroyInstance(externalId: string): Promise<void> {
    const ref = { type: 'VirtualMachine', value: externalId };
    const vm = await this.admin.retrieveOne(ref, ['runtime.powerState']);
    if (vm) {
      if (vm.props.get('runtime.powerState')?.text.trim() === 'poweredOn')
        await this.admin.waitForTask(moRef(await this.admin.call('PowerOffVM_Task', ref, {}))!, 'PowerOffVM_Task');
      await this.admin.waitForTask(moRef(await this.admin.call('Destroy_Task', ref, {}))!, 'Destroy_Task');
    }
    for (const pair of this.pairs.filter((p) => p.vm === externalId)) await run('ip', ['netns', 'del', pair.ns.name]).catch(() => undefined);
  }

  /** Stops vcsim (as if the ESXi host went away); `restartVcsim` brings a fresh one up on the same port. */
  async stopVcsim(): Promise<void> {
    await this.sim.stop();
  }

  /** Starts vcsim again on the same port (its inventory is new: VMs have their initial NICs). */
  async restartVcsim(): Promise<void> {
    this.sim = await startVcsim(this.vcsimPath, { port: Number(this.sim.url.port), vms: 4 });
    // vcsim answers a forgotten session's reads with empty objects, not NotAuthenticated: start afresh
    this.admin = new VsphereClient(this.endpoint());
    this.observer = new VsphereClient(this.endpoint());
  }

  /** Applies vcsim's view to the pairs once (the emulator does this every 200 ms). */
  async sync(): Promise<void> {
    let vms;
    let groups: PortGroupSpec[];
    try {
      vms = await readVms(this.observer);
      groups = await this.observer.portGroups();
    } catch {
      return; // vcsim away: the vSwitch keeps forwarding as it was
    }
    for (const pair of this.pairs) {
      const card = vms.find((v) => v.ref.value === pair.vm)?.nics.find((n) => n.mac === pair.mac && n.connected);
      const policy = card ? groups.find((g) => g.name === card.portGroup)?.shaping : undefined;
      const shaped = policy?.enabled && policy.averageBandwidth ? policy : undefined;
      const state = card ? `up ${shaped ? `${shaped.averageBandwidth}/${shaped.burstSize}` : ''}` : 'down';
      if (state === pair.state) continue;
      await this.gateway.exec('ip', ['link', 'set', pair.bridgePort, card ? 'up' : 'down']).catch(() => undefined);
      // what the VM sends leaves its own interface: an htb root qdisc there is the vSwitch's outbound shaping
      const spec = shaped
        ? { ingressBps: shaped.averageBandwidth!, egressBps: null, ingressBurstBytes: shaped.burstSize ?? null, egressBurstBytes: null }
        : null;
      await applyShaping({ iface: 'eth0', spec }, { netns: pair.ns.name }).catch(() => undefined);
      pair.state = state;
    }
  }

  private async emulate(): Promise<void> {
    while (!this.stopped) {
      await this.sync();
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** Stops the emulator and vcsim, and deletes the namespaces. */
  async cleanup(): Promise<void> {
    this.stopped = true;
    await this.loop;
    await this.sim?.stop();
    await this.lab.cleanup();
  }
}
