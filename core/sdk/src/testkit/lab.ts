/**
 * The network-namespace lab: test hosts made of network namespaces joined by veth pairs, with
 * addresses the test chooses. Every name starts with a per-lab prefix, and `cleanup` (also run on
 * process exit, and on SIGINT or SIGTERM when nothing else in the process handles them) deletes
 * exactly what this lab created, so a failed or interrupted test or bench leaves nothing behind and
 * never touches the machine's own interfaces or rulesets.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { run } from '../exec.js';

/** A namespace the lab created. */
export interface LabNamespace {
  readonly name: string;
  /** Runs a command inside the namespace (argument array, no shell). */
  exec(command: string, args: readonly string[], options?: { input?: string; timeoutMs?: number }): Promise<string>;
}

/** Whether this process may create namespaces (root with `ip netns`). */
export async function labAvailable(): Promise<boolean> {
  if (process.getuid?.() !== 0) return false;
  try {
    await run('ip', ['netns', 'list']);
    return true;
  } catch {
    return false;
  }
}

/**
 * Node ends a process on SIGINT/SIGTERM without its 'exit' event, so a bench stopped with Ctrl-C
 * would leave its namespaces. Where the process has no handler of its own for them, the first lab
 * installs one that exits with the signal's status instead (running every lab's exit clean-up).
 */
let signalsHandled = false;
function exitOnSignals(): void {
  if (signalsHandled) return;
  signalsHandled = true;
  for (const [signal, status] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    if (process.listenerCount(signal) === 0) process.once(signal, () => process.exit(status));
  }
}

/** A set of namespaces and links with guaranteed cleanup. */
export class NetnsLab {
  /** 'gh' + 6 hex characters: short, because interface names have 15 characters at most. */
  readonly prefix = `gh${randomBytes(3).toString('hex')}`;
  private readonly namespaces: string[] = [];
  private counter = 0;
  private readonly onExit = () => this.cleanupSync();

  constructor() {
    process.once('exit', this.onExit);
    exitOnSignals();
  }

  /** Creates a namespace with its loopback up and IPv6 duplicate address detection off (addresses usable at once). */
  async namespace(role: string): Promise<LabNamespace> {
    const name = `${this.prefix}-${role}`;
    await run('ip', ['netns', 'add', name]);
    this.namespaces.push(name);
    await run('ip', ['link', 'set', 'lo', 'up'], { netns: name });
    await run('sysctl', ['-q', '-w', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0'], { netns: name });
    return { name, exec: (command, args, options) => run(command, args, { ...options, netns: name }) };
  }

  /**
   * Joins two namespaces with a veth pair and gives each end an address (CIDR form, IPv4 or IPv6).
   * Returns the interface names on each side.
   */
  async link(a: LabNamespace, addressA: string, b: LabNamespace, addressB: string): Promise<{ ifA: string; ifB: string }> {
    const n = this.counter++;
    const ifA = `${this.prefix}a${n}`;
    const ifB = `${this.prefix}b${n}`;
    await run('ip', ['link', 'add', ifA, 'netns', a.name, 'type', 'veth', 'peer', 'name', ifB, 'netns', b.name]);
    for (const [ns, ifname, address] of [
      [a, ifA, addressA],
      [b, ifB, addressB],
    ] as const) {
      const v6 = address.includes(':');
      await ns.exec('ip', [...(v6 ? ['-6'] : []), 'addr', 'add', address, 'dev', ifname, ...(v6 ? ['nodad'] : [])]);
      await ns.exec('ip', ['link', 'set', ifname, 'up']);
    }
    return { ifA, ifB };
  }

  /** Deletes every namespace this lab created (their veths go with them); succeeds when already gone. */
  async cleanup(): Promise<void> {
    process.removeListener('exit', this.onExit);
    for (const name of this.namespaces.splice(0)) {
      await run('ip', ['netns', 'del', name]).catch(() => undefined);
    }
  }

  private cleanupSync(): void {
    // last resort when a test process exits without running its afterAll
    for (const name of this.namespaces.splice(0)) {
      try {
        execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
      } catch {
        // already gone
      }
    }
  }
}
