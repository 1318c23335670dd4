/**
 * @gatehouse/plugin-lxd/testing — a real LXD daemon for tests (this package's and its users', e.g.
 * the host agent's end-to-end test), kept off the machine's own network: it runs inside a network
 * namespace of the SDK's lab (`ip netns exec <host ns> lxd ...`), so its bridge, dnsmasq, the
 * containers' veths and its `table inet lxd` live there, and so does the `ip_forward` it sets. Its
 * state lives in a private LXD_DIR. A client namespace reaches the host namespace's "public"
 * address 198.51.100.1 over a veth pair. The image is built here from busybox-static (no registry):
 * its init runs udhcpc on every NIC, so LXD's DHCP hands out each NIC's `ipv4.address`.
 *
 * `cleanup` removes exactly what the lab made — instances, network, image, pool, then
 * `lxd shutdown` (a plain SIGTERM would leave containers and dnsmasq running), the namespaces, the
 * LXD_DIR and LXD's lock directory — and is also attempted on process exit.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmod, copyFile, mkdir, mkdtemp, readFile, readdir, rm, rmdir, symlink, writeFile } from 'node:fs/promises';
import { existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '@gatehouse/sdk';
import { NetnsLab, labAvailable, tcpServer, udpServer, type HarnessInstance, type HarnessNic, type LabNamespace, type LabServer } from '@gatehouse/sdk/testkit';
import { LxdApiError, LxdClient, type LxdInstance } from './index.js';

/** The subnet of the lab's LXD bridge (the conformance kit's default addresses). */
export const LAB_V4_PREFIX = '10.77.0.';
/** The host namespace's address as the client reaches it. */
export const LAB_PUBLIC_V4 = '198.51.100.1';

const INIT = `#!/bin/sh
# PID 1 of the Gatehouse LXD test image: loopback up, DHCP on every NIC (LXD's dnsmasq hands out
# each NIC device's ipv4.address), then wait; SIGPWR is what LXD sends to stop it
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
trap 'exit 0' PWR TERM INT
ip link set lo up
# environment.GATEHOUSE_DHCP=off (instance config): no DHCP client, the NICs stay without addresses
[ "$GATEHOUSE_DHCP" = off ] || for d in $(ls /sys/class/net); do
  [ "$d" = lo ] && continue
  ip link set "$d" up
  udhcpc -i "$d" -n -q -t 10 -T 1 -s /usr/share/udhcpc/default.script >>/var/log/init.log 2>&1 &
done
while true; do sleep 3600 & wait $!; done
`;

const LEASE_SCRIPT = `#!/bin/sh
# udhcpc lease script: add (never flush) the leased address, and the default route
case "$1" in
  bound|renew)
    ip addr replace "$ip/\${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route replace default via "\${router%% *}" dev "$interface"
    ;;
esac
exit 0
`;

function execFileText(cmd: string, args: readonly string[], env?: NodeJS.ProcessEnv, timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env: env ?? process.env, timeout: timeoutMs }, (err, stdout, stderr) =>
      err ? reject(new Error(`${cmd} ${args.join(' ')}: ${stderr || err.message}`)) : resolve(stdout),
    );
  });
}

/**
 * Whether LXD tests can run: root with `ip netns`, `lxd`, the `dnsmasq` LXD runs for its networks,
 * a static busybox and iperf3. Nothing is installed here: `npm test` installs them
 * (scripts/ensure-system.mjs) and its preflight names what is missing.
 */
export async function lxdAvailable(): Promise<boolean> {
  if (!(await labAvailable())) return false;
  const staticBusybox = (await execFileText('dpkg-query', ['-W', '-f', '${Status}', 'busybox-static']).catch(() => '')).includes('ok installed');
  return staticBusybox && ['/usr/bin/lxd', '/usr/sbin/dnsmasq', '/bin/busybox', '/usr/bin/iperf3'].every((path) => existsSync(path));
}

/** A running LXD in its own namespace, with a dir pool, one bridge and the busybox image. */
export class LxdLab {
  readonly lab = new NetnsLab();
  readonly dir = `/var/lib/${this.lab.prefix}-lxd`;
  readonly network = `${this.lab.prefix}br`;
  readonly pool = `${this.lab.prefix}pool`;
  readonly client = new LxdClient(join(this.dir, 'unix.socket'), 60_000);
  host!: LabNamespace;
  outside!: LabNamespace;
  private work = '';
  private daemon: ChildProcess | undefined;
  private fingerprint = '';
  private readonly instances = new Set<string>();
  private readonly extraNetworks: string[] = [];
  /** Names under /run/netns bound to instances' network namespaces (for `ip netns exec`). */
  private readonly attached = new Map<string, string>();
  private attachCount = 0;
  private pushed = 0;
  private readonly ipForwardBefore = readSysctl('net.ipv4.ip_forward');
  private readonly onExit = () => this.cleanupSync();

  /** Starts everything; cleans up what it made when any step fails. */
  static async start(): Promise<LxdLab> {
    const lab = new LxdLab();
    process.once('exit', lab.onExit);
    try {
      await lab.setUp();
      return lab;
    } catch (err) {
      await lab.cleanup();
      throw err;
    }
  }

  private async setUp(): Promise<void> {
    this.host = await this.lab.namespace('host');
    this.outside = await this.lab.namespace('cli');
    await this.lab.link(this.outside, '198.51.100.2/24', this.host, `${LAB_PUBLIC_V4}/24`);
    this.work = await mkdtemp(join(tmpdir(), 'gatehouse-lxd-'));
    await mkdir(this.dir, { recursive: true });
    await chmod(this.dir, 0o711); // unprivileged containers must traverse it
    await this.startDaemon();
    await this.client.call('PATCH', '/1.0', { config: { 'images.auto_update_interval': '0' } });
    await this.client.call('POST', '/1.0/storage-pools', { name: this.pool, driver: 'dir' });
    // an explicit subnet: LXD's automatic choice probes random 10.x addresses, and fails here
    await this.client.call('POST', '/1.0/networks', {
      name: this.network,
      type: 'bridge',
      config: { 'ipv4.address': `${LAB_V4_PREFIX}1/24`, 'ipv4.nat': 'false', 'ipv6.address': 'none' },
    });
    this.fingerprint = await this.importImage();
  }

  /** Creates another LXD bridge (`<prefix>br<n>`) with an explicit subnet; removed by cleanup. */
  async addNetwork(gatewayCidr: string): Promise<string> {
    const name = `${this.network}${this.extraNetworks.length + 1}`;
    await this.client.call('POST', '/1.0/networks', {
      name,
      type: 'bridge',
      config: { 'ipv4.address': gatewayCidr, 'ipv4.nat': 'false', 'ipv6.address': 'none' },
    });
    this.extraNetworks.push(name);
    return name;
  }

  /** Starts the daemon inside the host namespace and waits until it answers. */
  async startDaemon(): Promise<void> {
    const env = { ...process.env, LXD_DIR: this.dir };
    const log = join(this.work, 'lxd.log');
    // `ip netns exec` execs lxd itself: the child's PID is the daemon's
    this.daemon = spawn('ip', ['netns', 'exec', this.host.name, 'lxd', '--group', 'root', '--logfile', log], { env, stdio: 'ignore' });
    await execFileText('lxd', ['waitready', '--timeout', '30'], env);
  }

  /**
   * Stops only the daemon (SIGTERM to its PID): its containers and dnsmasq keep running, as when
   * LXD crashes or is upgraded; `startDaemon` adopts them again.
   */
  async stopDaemon(): Promise<void> {
    const daemon = this.daemon;
    if (!daemon || daemon.exitCode !== null || daemon.signalCode !== null) return;
    const exited = new Promise((resolve) => daemon.once('exit', resolve));
    daemon.kill('SIGTERM');
    await exited;
    this.daemon = undefined;
  }

  /** Builds the busybox image (metadata.yaml + rootfs/ in one tarball) and uploads it. */
  private async importImage(): Promise<string> {
    const root = join(this.work, 'image', 'rootfs');
    for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'etc', 'proc', 'sys', 'dev', 'tmp', 'root', 'run', 'var/log', 'usr/share/udhcpc'])
      await mkdir(join(root, d), { recursive: true });
    await copyFile('/bin/busybox', join(root, 'bin/busybox'));
    await chmod(join(root, 'bin/busybox'), 0o755);
    for (const applet of (await execFileText('/bin/busybox', ['--list-full'])).split('\n').filter(Boolean)) {
      if (applet === 'bin/busybox' || applet === 'sbin/init') continue;
      await symlink('/bin/busybox', join(root, applet)).catch(() => undefined);
    }
    await writeFile(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
    await writeFile(join(root, 'etc/group'), 'root:x:0:\n');
    await writeFile(join(root, 'sbin/init'), INIT, { mode: 0o755 });
    await writeFile(join(root, 'usr/share/udhcpc/default.script'), LEASE_SCRIPT, { mode: 0o755 });
    const metadata = `architecture: x86_64\ncreation_date: ${Math.floor(Date.now() / 1000)}\nproperties:\n  description: gatehouse busybox test image\n  os: busybox\n`;
    await writeFile(join(this.work, 'image', 'metadata.yaml'), metadata);
    const tarball = join(this.work, 'image.tar.gz');
    await execFileText('tar', ['--numeric-owner', '-czf', tarball, '-C', join(this.work, 'image'), 'metadata.yaml', 'rootfs']);
    const op = await this.client.upload<{ fingerprint: string }>('/1.0/images', tarball);
    return op.fingerprint;
  }

  /** Creates and starts a container with these NICs (static addresses through LXD's DHCP); waits until they have them. */
  async createInstance(name: string, nics: HarnessNic[]): Promise<HarnessInstance> {
    const devices: Record<string, Record<string, string>> = { root: { type: 'disk', path: '/', pool: this.pool } };
    for (const nic of nics) devices[nic.name] = { type: 'nic', network: nic.network, name: nic.name, hwaddr: nic.mac, 'ipv4.address': nic.address };
    this.instances.add(name);
    await this.client.call('POST', '/1.0/instances', { name, source: { type: 'image', fingerprint: this.fingerprint }, devices });
    await this.client.call('PUT', `/1.0/instances/${name}/state`, { action: 'start', timeout: 30 });
    const state = await this.waitForAddresses(
      name,
      nics.map((n) => n.address),
    );
    return this.handle(name, state.pid);
  }

  /**
   * Creates and starts a container the way an admin would, behind Gatehouse's back: NIC devices on
   * LXD networks without `hwaddr` or `ipv4.address` (LXD picks the MAC). With `dhcp: false` the
   * guest runs no DHCP client (its NICs have no address until someone configures one). Waits until
   * it runs; returns its init's PID.
   */
  async launchInstance(name: string, options: { nics: { device: string; network: string }[]; dhcp?: boolean }): Promise<{ pid: number }> {
    const devices: Record<string, Record<string, string>> = { root: { type: 'disk', path: '/', pool: this.pool } };
    for (const nic of options.nics) devices[nic.device] = { type: 'nic', network: nic.network, name: nic.device };
    const config: Record<string, string> = options.dhcp === false ? { 'environment.GATEHOUSE_DHCP': 'off' } : {};
    this.instances.add(name);
    await this.client.call('POST', '/1.0/instances', { name, source: { type: 'image', fingerprint: this.fingerprint }, devices, config });
    await this.client.call('PUT', `/1.0/instances/${name}/state`, { action: 'start', timeout: 30 });
    return this.waitForAddresses(name, []);
  }

  /** Runs a command inside an instance (argument array, through LXD's exec API); throws unless it exits 0. */
  async exec(name: string, command: readonly string[]): Promise<void> {
    const { exitCode, stderr } = await this.client.exec(name, command);
    if (exitCode !== 0) throw new Error(`\`${command.join(' ')}\` inside ${name} exited with ${exitCode}: ${stderr.trim()}`);
  }

  /** Writes a file inside an instance (LXD's file API; mode 0644, owned by root). */
  async pushFile(name: string, path: string, content: string): Promise<void> {
    const local = join(this.work, `push-${this.pushed++}`);
    await writeFile(local, content);
    try {
      await this.client.upload(`/1.0/instances/${encodeURIComponent(name)}/files?path=${encodeURIComponent(path)}`, local);
    } finally {
      await rm(local, { force: true });
    }
  }

  /**
   * Starts busybox httpd inside the instance (it daemonizes; it ends with the instance), serving
   * `body` for `GET /` on `port` from `/www`.
   */
  async startHttpServer(name: string, port: number, body: string): Promise<void> {
    await this.exec(name, ['mkdir', '-p', '/www']);
    await this.pushFile(name, '/www/index.html', body);
    await this.exec(name, ['httpd', '-p', String(port), '-h', '/www']);
  }

  /**
   * The instance's network namespace as a lab namespace (bound under /run/netns with
   * `ip netns attach`, removed by destroyInstance and cleanup): servers started there are reached
   * through LXD's veth, as the guest's own would be.
   */
  async instanceNamespace(name: string): Promise<LabNamespace> {
    let netns = this.attached.get(name);
    if (!netns) {
      const { pid } = await this.waitForAddresses(name, []);
      netns = `${this.lab.prefix}-i${this.attachCount++}`;
      await run('ip', ['netns', 'attach', netns, String(pid)]);
      this.attached.set(name, netns);
    }
    const ns = netns;
    return { name: ns, exec: (command, args, options) => run(command, args, { ...options, netns: ns }) };
  }

  /** Polls the instance's state until every address is on one of its NICs. */
  async waitForAddresses(name: string, addresses: readonly string[], ms = 20_000): Promise<{ pid: number }> {
    const until = Date.now() + ms;
    for (;;) {
      const state = await this.client.get<NonNullable<LxdInstance['state']>>(`/1.0/instances/${name}/state`);
      const have = new Set(Object.values(state?.network ?? {}).flatMap((n) => n.addresses.map((a) => a.address)));
      if (state && state.pid > 0 && addresses.every((a) => have.has(a))) return { pid: state.pid };
      if (Date.now() > until) throw new Error(`instance ${name} did not get ${addresses.join(', ')} within ${ms} ms (has ${[...have].join(', ')})`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** Servers inside the container's network namespace, started from the host: traffic still enters through LXD's veth. */
  private async handle(name: string, pid: number): Promise<HarnessInstance> {
    const netns = `${this.lab.prefix}-i${this.attachCount++}`;
    await run('ip', ['netns', 'attach', netns, String(pid)]);
    this.attached.set(name, netns);
    const ns: LabNamespace = { name: netns, exec: (command, args, options) => run(command, args, { ...options, netns }) };
    return {
      externalId: name,
      tcpServer: async (port, reply) => tcpServer(ns, port, reply),
      udpServer: async (port, reply) => udpServer(ns, port, reply),
      iperf3Server: async (port): Promise<LabServer> => {
        const child = spawn('ip', ['netns', 'exec', netns, 'iperf3', '-s', '-p', String(port)], { stdio: 'ignore' });
        return { process: child, stop: () => child.kill('SIGTERM') };
      },
    };
  }

  /** The namespace name bound to an instance's network namespace. */
  instanceNetns(name: string): string | undefined {
    return this.attached.get(name);
  }

  /** Deletes an instance (stopping it first); succeeds when it is already gone. */
  async destroyInstance(name: string): Promise<void> {
    try {
      await this.client.call('PUT', `/1.0/instances/${name}/state`, { action: 'stop', force: true, timeout: 30 });
    } catch (err) {
      if (!(err instanceof LxdApiError)) throw err; // already stopped or gone
    }
    try {
      await this.client.call('DELETE', `/1.0/instances/${name}`);
    } catch (err) {
      if (!(err instanceof LxdApiError && err.status === 404)) throw err;
    }
    const netns = this.attached.get(name);
    if (netns) await run('ip', ['netns', 'del', netns]).catch(() => undefined);
    this.attached.delete(name);
    this.instances.delete(name);
  }

  /** Removes everything the lab made, in the order LXD needs, and checks that LXD's processes are gone. */
  async cleanup(): Promise<void> {
    process.removeListener('exit', this.onExit);
    const problems: string[] = [];
    const attempt = async (what: string, step: () => Promise<unknown>) => {
      try {
        await step();
      } catch (err) {
        problems.push(`${what}: ${(err as Error).message}`);
      }
    };
    // a test may have left the daemon stopped: it must run to delete what it holds
    if (this.work && !this.daemon && existsSync(join(this.dir, 'database'))) await attempt('restart lxd', () => this.startDaemon());
    if (this.daemon && existsSync(this.client.socketPath)) {
      for (const name of [...this.instances]) await attempt(`instance ${name}`, () => this.destroyInstance(name));
      for (const network of [...this.extraNetworks, this.network])
        await attempt(`network ${network}`, () => this.client.call('DELETE', `/1.0/networks/${network}`).catch(ignore404));
      if (this.fingerprint) await attempt('image', () => this.client.call('DELETE', `/1.0/images/${this.fingerprint}`).catch(ignore404));
      await attempt('pool', () => this.client.call('DELETE', `/1.0/storage-pools/${this.pool}`).catch(ignore404));
    }
    const daemon = this.daemon;
    if (daemon && daemon.exitCode === null && daemon.signalCode === null) {
      const exited = new Promise((resolve) => daemon.once('exit', resolve));
      await attempt('lxd shutdown', () => execFileText('lxd', ['shutdown', '--timeout', '60'], { ...process.env, LXD_DIR: this.dir }, 90_000));
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      if (daemon.exitCode === null && daemon.signalCode === null) {
        problems.push(`lxd (pid ${daemon.pid}) did not exit after lxd shutdown; killed`);
        daemon.kill('SIGKILL');
      }
    }
    this.daemon = undefined;
    // nothing LXD started (dnsmasq, container inits) may outlive it: anything left in its namespace is reported and ended by PID
    if (this.host) {
      const left = (await run('ip', ['netns', 'pids', this.host.name]).catch(() => '')).split('\n').filter(Boolean);
      for (const pid of left) {
        problems.push(`process ${pid} (${await readComm(pid)}) was still running in ${this.host.name}; killed`);
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // exited meanwhile
        }
      }
    }
    for (const netns of this.attached.values()) await run('ip', ['netns', 'del', netns]).catch(() => undefined);
    this.attached.clear();
    // the namespace holds LXD's bridge, table inet lxd and ip_forward: deleting it removes them
    await this.lab.cleanup();
    await rm(this.dir, { recursive: true, force: true });
    await removeLxcLock(this.dir);
    if (this.work) await rm(this.work, { recursive: true, force: true });
    if (readSysctl('net.ipv4.ip_forward') !== this.ipForwardBefore) {
      problems.push('net.ipv4.ip_forward of the root namespace changed; restored');
      await run('sysctl', ['-q', '-w', `net.ipv4.ip_forward=${this.ipForwardBefore}`]);
    }
    if (problems.length > 0) throw new Error(`LXD lab cleanup: ${problems.join('; ')}`);
  }

  /** Last resort when the test process exits without afterAll: stop LXD (it stops its containers), then remove its files. */
  private cleanupSync(): void {
    const daemon = this.daemon;
    if (daemon && daemon.exitCode === null && daemon.signalCode === null) {
      try {
        execFileSync('lxd', ['shutdown', '--timeout', '30'], { env: { ...process.env, LXD_DIR: this.dir }, stdio: 'ignore', timeout: 40_000 });
      } catch {
        if (daemon.pid) process.kill(daemon.pid, 'SIGKILL');
      }
    }
    for (const netns of this.attached.values()) {
      try {
        execFileSync('ip', ['netns', 'del', netns], { stdio: 'ignore' });
      } catch {
        // already gone
      }
    }
    // the lab's own exit hook deletes the namespaces
    rmSync(this.dir, { recursive: true, force: true });
    rmSync(join('/run/lxc/lock', this.dir), { recursive: true, force: true });
    if (this.work) rmSync(this.work, { recursive: true, force: true });
  }
}

async function readComm(pid: string): Promise<string> {
  return (await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '?')).trim();
}

function ignore404(err: unknown): void {
  if (!(err instanceof LxdApiError && err.status === 404)) throw err;
}

function readSysctl(key: string): string {
  return execFileSync('sysctl', ['-n', key], { encoding: 'utf8' }).trim();
}

/** LXD keeps a lock directory named after LXD_DIR under /run/lxc/lock; remove it and its empty parents. */
async function removeLxcLock(dir: string): Promise<void> {
  const lock = join('/run/lxc/lock', dir);
  await rm(lock, { recursive: true, force: true });
  let parent = join(lock, '..');
  while (parent.startsWith('/run/lxc')) {
    if ((await readdir(parent).catch(() => ['?'])).length > 0) break;
    await rmdir(parent).catch(() => undefined);
    parent = join(parent, '..');
  }
}
