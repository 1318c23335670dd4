/**
 * The sandbox's network on this machine: a host namespace joined to this machine's namespace by
 * one veth pair with a /30, and one namespace per demo instance running a small HTTP server.
 * Everything else (bridge, instance NICs, nftables, tc) is the linux plugin's work inside the host
 * namespace, so the machine's own ruleset is never touched.
 *
 * One controller per machine owns the sandbox: a state file under /run records its PID and the
 * PIDs of the demo servers, so a controller that died without cleaning up is recognised and its
 * leftovers removed on the next start, while a live one is left alone.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { run } from '@gatehouse/sdk';
import { cidrContains, cidrLast, parseCidr, parseIp, rangesOverlap, type IpCidr } from '@gatehouse/server';
import { instanceNetns, type SandboxLayout } from './sandbox-layout.js';

/** Where the owning controller records itself and its demo servers. */
export const SANDBOX_STATE_FILE = '/run/gatehouse/sandbox.json';

/** Why the sandbox cannot start; the message is for the operator, as is. */
export class SandboxUnavailableError extends Error {
  override readonly name = 'SandboxUnavailableError';
}

interface SandboxState {
  pid: number;
  servers: number[];
}

/** The demo HTTP server, run with `node -e` inside an instance namespace; argv: name, address, port. */
const DEMO_SERVER = `
const http = require('node:http');
const [name, address, port] = process.argv.slice(1);
const parent = process.ppid;
http
  .createServer((req, res) => {
    res.setHeader('content-type', 'text/plain');
    res.end('hello from ' + name + ' (' + address + ')\\n');
  })
  .listen(Number(port), '0.0.0.0', () => console.log('listening on ' + port));
// orphaned (the controller died without stopping us): stop too
setInterval(() => { if (process.ppid !== parent) process.exit(0); }, 1000).unref();
`;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readState(file: string): SandboxState | undefined {
  try {
    const state = JSON.parse(readFileSync(file, 'utf8')) as Partial<SandboxState>;
    return {
      pid: Number.isInteger(state.pid) ? state.pid! : 0,
      servers: Array.isArray(state.servers) ? state.servers.filter((p): p is number => Number.isInteger(p) && p > 1) : [],
    };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    return { pid: 0, servers: [] }; // unreadable: treat as a leftover
  }
}

function cidrOf(text: string): IpCidr {
  const cidr = parseCidr(text, { allowHostBits: true });
  if ('error' in cidr) throw new Error(`${text} ${cidr.error}`);
  return cidr;
}

function overlaps(a: IpCidr, b: IpCidr): boolean {
  return a.family === b.family && rangesOverlap({ start: a.network, end: cidrLast(a) }, { start: b.network, end: cidrLast(b) });
}

/** Deletes a link or namespace; succeeds when already gone. */
async function removeQuietly(args: string[]): Promise<void> {
  await run('ip', args).catch(() => undefined);
}

/** The sandbox's namespaces, links and demo servers, owned by this process. */
export class SandboxNetwork {
  private readonly servers = new Map<string, ChildProcess>();
  private torndown = false;

  private constructor(
    readonly layout: SandboxLayout,
    private readonly stateFile: string,
  ) {}

  /**
   * Takes ownership of the sandbox on this machine: refuses when another live controller owns it,
   * removes what a dead one left behind. Call `create` next, and `teardown` in the end.
   */
  static async claim(layout: SandboxLayout, stateFile = SANDBOX_STATE_FILE): Promise<SandboxNetwork> {
    mkdirSync(dirname(stateFile), { recursive: true });
    const leftovers: number[] = [];
    for (let attempt = 0; ; attempt++) {
      try {
        // exclusive create: of two controllers starting at once, one owns the sandbox
        writeFileSync(stateFile, JSON.stringify({ pid: process.pid, servers: [] } satisfies SandboxState), { flag: 'wx', mode: 0o644 });
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 3) throw err;
      }
      const previous = readState(stateFile);
      if (previous && previous.pid !== process.pid && alive(previous.pid)) {
        throw new SandboxUnavailableError(
          `the sandbox is in use by another controller (pid ${previous.pid}, see ${stateFile}); stop it first, or start this one with --no-sandbox`,
        );
      }
      leftovers.push(...(previous?.servers ?? []));
      rmSync(stateFile, { force: true });
    }
    const network = new SandboxNetwork(layout, stateFile);
    await network.removeLeftovers(leftovers);
    return network;
  }

  /** Creates the namespaces and the uplink; refuses when the uplink's addresses are in use on this machine. */
  async create(): Promise<void> {
    const l = this.layout;
    await this.checkUplinkFree();
    await run('ip', ['netns', 'add', l.hostNetns]);
    await run('ip', ['link', 'set', 'lo', 'up'], { netns: l.hostNetns });
    await run('ip', ['link', 'add', l.rootIf, 'type', 'veth', 'peer', 'name', l.hostIf, 'netns', l.hostNetns]);
    await run('ip', ['addr', 'add', `${l.rootAddress}/${l.uplinkPrefixLength}`, 'dev', l.rootIf]);
    await run('ip', ['link', 'set', l.rootIf, 'up']);
    await run('ip', ['addr', 'add', `${l.publicAddress}/${l.uplinkPrefixLength}`, 'dev', l.hostIf], { netns: l.hostNetns });
    await run('ip', ['link', 'set', l.hostIf, 'up'], { netns: l.hostNetns });
    // the instances' network is reached from here through the sandbox host, as Caddy (web proxies)
    // on a controller reaches instances; the route goes with the link. Left out (not an error)
    // when that network is already routed here.
    if (!(await this.routed(l.pool.cidr))) await run('ip', ['route', 'add', l.pool.cidr, 'via', l.publicAddress, 'dev', l.rootIf]);
    // routing between the uplink and the instances, in the host namespace only
    await run('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1'], { netns: l.hostNetns });
    for (const instance of l.instances) {
      const netns = instanceNetns(l, instance);
      await run('ip', ['netns', 'add', netns]);
      await run('ip', ['link', 'set', 'lo', 'up'], { netns });
    }
  }

  /** Whether a route on this machine overlaps `cidr` (the default route aside). */
  private async routed(cidr: string): Promise<boolean> {
    const wanted = cidrOf(cidr);
    const routes = JSON.parse(await run('ip', ['-j', '-4', 'route', 'show'])) as { dst: string }[];
    return routes.some((r) => r.dst !== 'default' && overlaps(wanted, cidrOf(r.dst.includes('/') ? r.dst : `${r.dst}/32`)));
  }

  /** Starts the demo HTTP server of an instance in its namespace; resolves once it listens. */
  async startDemoServer(instance: string, address: string): Promise<void> {
    const netns = instanceNetns(this.layout, instance);
    const child = spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', DEMO_SERVER, instance, address, String(this.layout.demoPort)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' },
    });
    this.servers.set(instance, child);
    this.recordServers();
    let output = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the demo server of ${instance} did not start in 10 s: ${output.trim()}`)), 10_000);
      const onData = (d: Buffer) => {
        output += d.toString();
        if (/listening on/.test(output)) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`the demo server of ${instance} exited (${code}): ${output.trim()}`));
      });
    });
    child.stdout!.resume();
    child.stderr!.resume();
  }

  /** Stops the demo servers (by PID) and deletes the namespaces and the uplink; idempotent. */
  async teardown(): Promise<void> {
    if (this.torndown) return;
    this.torndown = true;
    await Promise.all(
      [...this.servers.values()].map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            child.once('exit', () => resolve());
            child.kill('SIGTERM');
          }),
      ),
    );
    this.servers.clear();
    await this.removeLinksAndNamespaces();
    if (readState(this.stateFile)?.pid === process.pid) rmSync(this.stateFile, { force: true });
  }

  /** The same as `teardown`, synchronously: for a process that exits without running it. */
  teardownSync(): void {
    if (this.torndown) return;
    this.torndown = true;
    for (const child of this.servers.values()) if (child.exitCode === null) child.kill('SIGTERM');
    for (const args of this.removals()) {
      try {
        execFileSync('ip', args, { stdio: 'ignore' });
      } catch {
        // already gone
      }
    }
    if (readState(this.stateFile)?.pid === process.pid) rmSync(this.stateFile, { force: true });
  }

  /** Kills the demo servers a dead controller left running (only if still in a sandbox namespace), then removes its namespaces. */
  private async removeLeftovers(servers: readonly number[]): Promise<void> {
    for (const pid of servers) {
      const netns = (await run('ip', ['netns', 'identify', String(pid)]).catch(() => '')).trim();
      if (netns.startsWith(this.layout.namespacePrefix)) {
        try {
          process.kill(pid, 'SIGTERM');
        } catch {
          // exited meanwhile
        }
      }
    }
    await this.removeLinksAndNamespaces();
  }

  private removals(): string[][] {
    const l = this.layout;
    // the root end first: deleting it removes its peer at once, not when the namespace is freed
    return [['link', 'del', l.rootIf], ...l.instances.map((i) => ['netns', 'del', instanceNetns(l, i)]), ['netns', 'del', l.hostNetns]];
  }

  private async removeLinksAndNamespaces(): Promise<void> {
    for (const args of this.removals()) await removeQuietly(args);
  }

  private recordServers(): void {
    const servers = [...this.servers.values()].map((c) => c.pid).filter((p): p is number => p !== undefined);
    writeFileSync(this.stateFile, JSON.stringify({ pid: process.pid, servers } satisfies SandboxState));
  }

  /** Refuses when an address or route of this machine overlaps the uplink's /30. */
  private async checkUplinkFree(): Promise<void> {
    const l = this.layout;
    const uplink = cidrOf(l.uplinkSubnet);
    const addrs = JSON.parse(await run('ip', ['-j', '-4', 'addr', 'show'])) as { ifname: string; addr_info?: { local: string; prefixlen: number }[] }[];
    for (const link of addrs) {
      for (const a of link.addr_info ?? []) {
        const local = parseIp(a.local);
        if ('error' in local) continue;
        if (cidrContains(uplink, local) || overlaps(uplink, cidrOf(`${a.local}/${a.prefixlen}`)))
          throw new SandboxUnavailableError(
            `${l.uplinkSubnet}, the sandbox's link to this machine, is already in use: ${link.ifname} has ${a.local}/${a.prefixlen}`,
          );
      }
    }
    const routes = JSON.parse(await run('ip', ['-j', '-4', 'route', 'show'])) as { dst: string; dev?: string }[];
    for (const route of routes) {
      if (route.dst === 'default') continue;
      const dst = cidrOf(route.dst.includes('/') ? route.dst : `${route.dst}/32`);
      if (overlaps(uplink, dst))
        throw new SandboxUnavailableError(
          `${l.uplinkSubnet}, the sandbox's link to this machine, is already routed: ${route.dst}${route.dev ? ` dev ${route.dev}` : ''}`,
        );
    }
  }
}
