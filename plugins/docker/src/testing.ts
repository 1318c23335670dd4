/**
 * @gatehouse/plugin-docker/testing — a private Docker host for tests (this package's and its
 * users', e.g. the host agent's end-to-end test): a network namespace of the lab (`host`, public address
 * 198.51.100.1) in which the test's own dockerd runs (private socket, data root, exec root, pid
 * file and cgroup parent under a temp dir), a `client` namespace linked to it (198.51.100.2), and a
 * busybox image imported through the Engine API. dockerd's bridges, veths and iptables rules live in
 * that namespace, so the machine's own network and firewall are never touched. `cleanup` (also run
 * on process exit) removes exactly what was made: containers, networks, image, the dockerd it
 * started (by PID), namespaces, mounts, files and cgroups.
 *
 * dockerd is started with `nsenter --net=...`, not `ip netns exec`: the latter also remounts /sys,
 * which hides the cgroup v1 mounts under /sys/fs/cgroup, and dockerd then refuses to start
 * ("Devices cgroup isn't mounted").
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import {
  existsSync,
  mkdtempSync,
  openSync,
  closeSync,
  readFileSync,
  readdirSync,
  rmSync,
  rmdirSync,
  writeFileSync,
  mkdirSync,
  symlinkSync,
  copyFileSync,
  chmodSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { run } from '@gatehouse/sdk';
import { NetnsLab, labAvailable, type LabNamespace } from '@gatehouse/sdk/testkit';
import { DockerEngine } from './engine.js';

/** CI: run (and fail) where the suite cannot work instead of skipping it. */
export const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
export const IMAGE = 'ghbusybox:latest';
export const silent = { debug() {}, info() {}, warn() {}, error() {} };

const has = (path: string) => existsSync(path);

/**
 * Whether this machine can run the suite: root with `ip netns`, dockerd, a static busybox, nsenter
 * and iperf3. Nothing is installed here: `npm test` installs them (scripts/ensure-system.mjs) and
 * its preflight names what is missing.
 */
export async function dockerAvailable(): Promise<boolean> {
  if (!(await labAvailable())) return false;
  const staticBusybox = (await run('dpkg-query', ['-W', '-f', '${Status}', 'busybox-static']).catch(() => '')).includes('install ok installed');
  return has('/usr/sbin/dockerd') && staticBusybox && has('/usr/bin/nsenter') && has('/usr/bin/iperf3');
}

/** A running container of the lab. */
export interface LabContainer {
  id: string;
  name: string;
}

/** The test's Docker host. */
export class DockerLab {
  readonly lab = new NetnsLab();
  readonly dir = mkdtempSync('/tmp/ghdocker-');
  readonly socketPath = join(this.dir, 'docker.sock');
  readonly engine = new DockerEngine(this.socketPath);
  host!: LabNamespace;
  client!: LabNamespace;
  pid: number | undefined;
  /** Names under /run/netns bound to containers' namespaces (`ip netns attach`), for the traffic helpers. */
  private readonly attached: string[] = [];
  private attachCounter = 0;
  // files dockerd creates outside its data and exec roots whatever it is told
  private readonly created = { runDocker: !has('/run/docker'), keyJson: !has('/etc/docker/key.json') };
  private readonly onExit = () => this.cleanupSync();

  private constructor() {
    process.once('exit', this.onExit);
  }

  /** The prefix of every name the lab gives (namespaces, networks, containers, the cgroup parent). */
  get prefix(): string {
    return this.lab.prefix;
  }

  /** Namespaces, the link between them, dockerd and the image. */
  static async create(): Promise<DockerLab> {
    const d = new DockerLab();
    try {
      d.host = await d.lab.namespace('host');
      d.client = await d.lab.namespace('cli');
      await d.lab.link(d.client, '198.51.100.2/24', d.host, '198.51.100.1/24');
      // forwarding on before dockerd starts: Docker sets iptables' FORWARD policy to DROP only
      // when it is the one switching forwarding on (see the README)
      await d.host.exec('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1']);
      await d.startDaemon();
      await d.importImage();
      return d;
    } catch (err) {
      await d.cleanup();
      throw err;
    }
  }

  /** Starts dockerd in the host namespace and waits until its API answers. */
  async startDaemon(): Promise<void> {
    const log = openSync(join(this.dir, 'dockerd.log'), 'a');
    const child = spawn(
      'nsenter',
      [
        `--net=/run/netns/${this.host.name}`,
        'dockerd',
        '--host',
        `unix://${this.socketPath}`,
        '--data-root',
        join(this.dir, 'data'),
        '--exec-root',
        join(this.dir, 'exec'),
        '--pidfile',
        join(this.dir, 'dockerd.pid'),
        '--bridge=none',
        '--cgroup-parent',
        `/${this.prefix}`,
      ],
      { detached: true, stdio: ['ignore', log, log] },
    );
    closeSync(log);
    child.unref();
    // nsenter enters the namespace and execs dockerd: the same PID
    this.pid = child.pid;
    const until = Date.now() + 30_000;
    for (;;) {
      try {
        await this.engine.ping();
        return;
      } catch (err) {
        if (Date.now() > until || child.exitCode !== null)
          throw new Error(`dockerd did not start: ${String(err)}\n${readFileSync(join(this.dir, 'dockerd.log'), 'utf8').slice(-2000)}`);
        await sleep(100);
      }
    }
  }

  /** Stops the dockerd this lab started (SIGTERM, SIGKILL after 30 s) and waits until it has exited. */
  async stopDaemon(): Promise<void> {
    const pid = this.pid;
    if (pid === undefined) return;
    signal(pid, 'SIGTERM');
    const until = Date.now() + 30_000;
    while (alive(pid)) {
      if (Date.now() > until) signal(pid, 'SIGKILL');
      await sleep(100);
    }
    this.pid = undefined;
  }

  /** A busybox root filesystem, imported as IMAGE through `POST /images/create?fromSrc=-`. */
  private async importImage(): Promise<void> {
    const root = join(this.dir, 'rootfs');
    for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'etc', 'proc', 'sys', 'dev', 'tmp', 'root']) mkdirSync(join(root, d), { recursive: true });
    copyFileSync('/bin/busybox', join(root, 'bin/busybox'));
    execFileSync('chmod', ['755', join(root, 'bin/busybox')]);
    for (const applet of (await run('/bin/busybox', ['--list-full'])).split('\n').filter((a) => a && a !== 'bin/busybox')) {
      if (!has(join(root, applet))) symlinkSync('/bin/busybox', join(root, applet));
    }
    writeFileSync(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
    writeFileSync(join(root, 'etc/group'), 'root:x:0:\n');
    const tarball = await tar(root);
    const r = await this.engine.send('POST', '/images/create?fromSrc=-&repo=ghbusybox&tag=latest', tarball, 'application/x-tar');
    if (r.status !== 200) throw new Error(`image import failed: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  }

  /** A user-defined bridge network with an explicit subnet (not the plugin's: no managed label). */
  async createNetwork(name: string, subnet: string, gateway: string): Promise<void> {
    const r = await this.engine.send('POST', '/networks/create', {
      Name: name,
      Driver: 'bridge',
      CheckDuplicate: true,
      IPAM: { Config: [{ Subnet: subnet, Gateway: gateway }] },
    });
    if (r.status !== 201) throw new Error(`network ${name}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  }

  /**
   * A running container on `network` with a static address (and MAC), restarted by Docker when it
   * or dockerd restarts; tini as PID 1 (busybox as PID 1 ignores SIGTERM, so every stop would wait 10 s).
   */
  async createContainer(
    name: string,
    nic: { network: string; address?: string; mac?: string },
    options: { cmd?: string[]; files?: Record<string, string> } = {},
  ): Promise<LabContainer> {
    const full = `${this.prefix}-${name}`;
    const body = {
      Image: IMAGE,
      Cmd: options.cmd ?? ['/bin/sleep', '2147483647'],
      ...(nic.mac ? { MacAddress: nic.mac } : {}),
      HostConfig: { Init: true, NetworkMode: nic.network, RestartPolicy: { Name: 'always' } },
      NetworkingConfig: { EndpointsConfig: { [nic.network]: nic.address ? { IPAMConfig: { IPv4Address: nic.address } } : {} } },
    };
    const created = await this.engine.send('POST', `/containers/create?name=${encodeURIComponent(full)}`, body);
    if (created.status !== 201) throw new Error(`container ${full}: HTTP ${created.status} ${JSON.stringify(created.body)}`);
    const id = (created.body as { Id: string }).Id;
    if (options.files) await this.putFiles(id, options.files);
    const started = await this.engine.send('POST', `/containers/${id}/start`);
    if (started.status !== 204) throw new Error(`container ${full} start: HTTP ${started.status} ${JSON.stringify(started.body)}`);
    return { id, name: full };
  }

  /**
   * Writes files (absolute path → content) into a container's filesystem through
   * `PUT /containers/{id}/archive` (a tar made with `tar` from a temp dir); works on created and
   * running containers alike.
   */
  async putFiles(idOrName: string, files: Record<string, string>): Promise<void> {
    const staging = mkdtempSync(join(this.dir, 'files-'));
    // the tar's "." entry lands on the container's "/": give it the usual mode, not mkdtemp's 0700
    chmodSync(staging, 0o755);
    try {
      for (const [path, content] of Object.entries(files)) {
        if (!path.startsWith('/') || path.split('/').includes('..')) throw new Error(`putFiles: ${path} is not an absolute path without ..`);
        mkdirSync(join(staging, dirname(path)), { recursive: true });
        writeFileSync(join(staging, path), content, { mode: 0o644 });
      }
      const tarball = await tar(staging);
      const r = await this.engine.send('PUT', `/containers/${encodeURIComponent(idOrName)}/archive?path=/`, tarball, 'application/x-tar');
      if (r.status !== 200) throw new Error(`putting files into ${idOrName}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
    } finally {
      rmSync(staging, { recursive: true, force: true });
    }
  }

  /** Removes a container (force); succeeds when it is already gone. */
  async removeContainer(idOrName: string): Promise<void> {
    await this.engine.send('DELETE', `/containers/${encodeURIComponent(idOrName)}?force=1&v=1`);
  }

  /** The PID of a running container's init process. */
  async containerPid(idOrName: string): Promise<number> {
    const c = await this.engine.container(idOrName);
    if (!c?.State.Running) throw new Error(`container ${idOrName} is not running`);
    return c.State.Pid;
  }

  /**
   * The container's current network namespace under a name of the lab (`ip netns attach`), so the
   * testkit's servers and clients run in it; a restarted container needs a new one.
   */
  async namespaceOf(idOrName: string): Promise<LabNamespace> {
    const name = `${this.prefix}-c${this.attachCounter++}`;
    await run('ip', ['netns', 'attach', name, String(await this.containerPid(idOrName))]);
    this.attached.push(name);
    return { name, exec: (command, args, options) => run(command, args, { ...options, netns: name }) };
  }

  /** Removes everything the lab made; succeeds when parts are already gone. */
  async cleanup(): Promise<void> {
    process.removeListener('exit', this.onExit);
    if (this.pid !== undefined && alive(this.pid)) {
      try {
        for (const c of (await this.engine.send('GET', '/containers/json?all=1')).body as { Id: string }[]) await this.removeContainer(c.Id);
        for (const n of (await this.engine.send('GET', '/networks')).body as { Id: string; Name: string }[]) {
          if (!['bridge', 'host', 'none'].includes(n.Name)) await this.engine.send('DELETE', `/networks/${n.Id}`);
        }
        await this.engine.send('DELETE', `/images/${encodeURIComponent(IMAGE)}?force=1`);
      } catch {
        // the daemon is in trouble: stopping it below still stops its containers
      }
    }
    await this.stopDaemon();
    this.cleanupSync();
  }

  /** What can be done synchronously (also the last resort on process exit). */
  private cleanupSync(): void {
    if (this.pid !== undefined) {
      signal(this.pid, 'SIGTERM');
      const until = Date.now() + 30_000;
      while (alive(this.pid) && Date.now() < until) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
      if (alive(this.pid)) signal(this.pid, 'SIGKILL');
      this.pid = undefined;
    }
    for (const name of this.attached.splice(0)) quiet('ip', ['netns', 'del', name]);
    // the host namespace takes dockerd's bridges, veths and iptables rules with it
    for (const name of readdirSync('/run/netns').filter((n) => n.startsWith(`${this.prefix}-`))) quiet('ip', ['netns', 'del', name]);
    void this.lab.cleanup();
    // container root filesystems left mounted by a dockerd that had to be killed
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[4] ?? '')
      .filter((m) => m.startsWith(`${this.dir}/`))
      .sort((a, b) => b.length - a.length);
    for (const m of mounts) quiet('umount', ['-l', m]);
    rmSync(this.dir, { recursive: true, force: true });
    if (this.created.runDocker) rmSync('/run/docker', { recursive: true, force: true });
    if (this.created.keyJson) rmSync('/etc/docker/key.json', { force: true });
    for (const controller of has('/sys/fs/cgroup') ? readdirSync('/sys/fs/cgroup') : []) {
      const dir = join('/sys/fs/cgroup', controller, this.prefix);
      try {
        if (has(dir)) rmdirSync(dir);
      } catch {
        // busy or a symlinked controller already handled
      }
    }
  }
}

/** A tar of a directory's contents (numeric owners), in memory. */
function tar(dir: string): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) =>
    execFile('tar', ['--numeric-owner', '-C', dir, '-c', '.'], { encoding: 'buffer', maxBuffer: 64 * 1024 * 1024 }, (err, out) =>
      err ? reject(err) : resolve(out),
    ),
  );
}

/** Whether a process runs (an exited child not reaped yet, a zombie, does not). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

function quiet(command: string, args: string[]): void {
  try {
    execFileSync(command, args, { stdio: 'ignore' });
  } catch {
    // already gone
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
