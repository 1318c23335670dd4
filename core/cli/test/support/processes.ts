/** Starts controller processes (`gatehouse serve` from source) for tests and stops them by PID. */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const CLI_DIR = fileURLToPath(new URL('../..', import.meta.url));

/** A running controller process. */
export interface ControllerProcess {
  url: string;
  child: ChildProcess;
  output(): string;
  stop(): Promise<void>;
}

/**
 * Starts `gatehouse serve` from source on a free port and waits until it listens. Without the
 * sandbox: it is one per machine, and only sandbox.test.ts is about it. `netns` runs it inside a
 * network namespace of the test's (`ip netns exec`).
 */
export async function spawnController(args: string[], env: Record<string, string> = {}, netns?: string): Promise<ControllerProcess> {
  const command = [process.execPath, '--import', 'tsx', 'src/cli.ts', 'serve', '--port', '0', '--no-sandbox', ...args];
  const child = spawn(netns ? 'ip' : command[0]!, netns ? ['netns', 'exec', netns, ...command] : command.slice(1), {
    cwd: CLI_DIR,
    // no Caddy on ports 80/443 nor a jump server on 2222 unless the test asks (GATEHOUSE_PROXY=on, GATEHOUSE_SSH=on in env)
    env: { ...process.env, GATEHOUSE_PROXY: 'off', GATEHOUSE_SSH: 'off', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`controller did not start in 60 s:\n${out}`)), 60_000);
    const check = () => {
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    };
    child.stdout!.on('data', check);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`controller exited with ${code}:\n${out}`));
    });
  });
  return {
    url,
    child,
    output: () => out,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

/** A running agent process (`gatehouse agent`), with its output. */
export interface AgentProcess {
  child: ChildProcess;
  output(): string;
  /** Resolves with the match and when it was seen (performance.now()) once the output from offset `from` on matches `pattern`; rejects after `ms`. */
  waitFor(pattern: RegExp, ms?: number, from?: number): Promise<{ match: RegExpExecArray; at: number }>;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * Starts `gatehouse agent` from source with the token in its environment; `netns` runs it inside a
 * network namespace (`ip netns exec`, the agent of a host cut off by the test); `dist` runs the
 * built command (`dist/cli.js`, as installed) instead of the sources through tsx.
 */
export function spawnAgent(args: string[], token: string, netns?: string, { dist = false }: { dist?: boolean } = {}): AgentProcess {
  const command = [process.execPath, ...(dist ? ['dist/cli.js'] : ['--import', 'tsx', 'src/cli.ts']), 'agent', ...args];
  const child = netns
    ? spawn('ip', ['netns', 'exec', netns, ...command], {
        cwd: CLI_DIR,
        env: { ...process.env, GATEHOUSE_AGENT_TOKEN: token },
        stdio: ['ignore', 'pipe', 'pipe'],
      })
    : spawn(command[0]!, command.slice(1), { cwd: CLI_DIR, env: { ...process.env, GATEHOUSE_AGENT_TOKEN: token }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const waiters = new Set<() => void>();
  const onData = (d: Buffer) => {
    out += d.toString();
    for (const w of waiters) w();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  return {
    child,
    output: () => out,
    waitFor: (pattern, ms = 60_000, from = 0) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const match = pattern.exec(out.slice(from));
          if (!match) return;
          done();
          resolve({ match, at: performance.now() });
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`no ${pattern} in ${ms} ms; agent output:\n${out.slice(-4000)}`));
        }, ms);
        const done = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      }),
    stop: (signal = 'SIGTERM') =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill(signal);
      }),
  };
}

/** SIGKILLs a controller and resolves once it is gone (its sockets closed by the kernel). */
export async function killController(controller: ControllerProcess): Promise<void> {
  if (controller.child.exitCode !== null || controller.child.signalCode !== null) return;
  const gone = new Promise((r) => controller.child.once('exit', r));
  controller.child.kill('SIGKILL');
  await gone;
}

/**
 * The arguments of an agent with the Linux plugin on a lab host namespace (instances are the
 * namespaces named `namespacePrefix…`), checking drift every 300 ms, no traffic reports.
 */
export function linuxAgentArgs(o: {
  controllers: string;
  hostId: string;
  hostNetns: string;
  namespacePrefix: string;
  stateDir: string;
  extra?: string[];
}): string[] {
  const config = JSON.stringify({ hostNetns: o.hostNetns, namespacePrefix: o.namespacePrefix });
  return [
    ...['--controller', o.controllers, '--plugin', 'linux', '--host', o.hostId, '--plugin-config', config],
    ...['--drift-interval', '300', '--state-dir', o.stateDir, '--stats-interval', '0', ...(o.extra ?? [])],
  ];
}
