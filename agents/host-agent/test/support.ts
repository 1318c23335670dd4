/**
 * End-to-end test support: a real controller process (`gatehouse serve` from source, PGlite in a
 * temporary directory), GraphQL over HTTP, and agent processes (`gatehouse agent` from source),
 * all stopped by their own PIDs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../../..', import.meta.url));

/** A child process with its output. */
export interface Proc {
  child: ChildProcess;
  output(): string;
  /** Resolves when the output matches `pattern` (rejects after `ms`). */
  waitFor(pattern: RegExp, ms?: number): Promise<RegExpExecArray>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

function start(args: string[], env: Record<string, string> = {}): Proc {
  const child = spawn(process.execPath, ['--import', 'tsx', ...args], { cwd: REPO, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const listeners = new Set<() => void>();
  const onData = (d: Buffer) => {
    out += d.toString();
    for (const l of listeners) l();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  return {
    child,
    output: () => out,
    waitFor: (pattern, ms = 60_000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const m = pattern.exec(out);
          if (m) {
            cleanup();
            resolve(m);
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`no ${pattern} in ${ms} ms; output:\n${out.slice(-4000)}`));
        }, ms);
        const exit = () => {
          check();
          cleanup();
          reject(new Error(`process exited (${child.exitCode}) before ${pattern}; output:\n${out.slice(-4000)}`));
        };
        const cleanup = () => {
          clearTimeout(timer);
          listeners.delete(check);
          child.off('exit', exit);
        };
        listeners.add(check);
        child.once('exit', exit);
        check();
      }),
    stop: (signal = 'SIGTERM') =>
      new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode);
        child.once('exit', (code) => resolve(code));
        child.kill(signal);
      }),
  };
}

/**
 * Starts a controller on PGlite in `dataDir` (`fresh`: its first start); port 0 picks a free one.
 * No SSH jump server unless `args` has `--ssh-port`.
 */
export async function startController(
  dataDir: string,
  { port = 0, fresh = true, args = [] }: { port?: number; fresh?: boolean; args?: string[] } = {},
): Promise<{ proc: Proc; url: string; bootstrapSecret: string | null }> {
  const wantsSsh = args.includes('--ssh-port');
  // the test runner sets GATEHOUSE_SSH=off for every controller; a test that asks for the jump server overrides it
  const proc = start(
    ['core/cli/src/cli.ts', 'serve', '--no-sandbox', '--no-proxy', ...(wantsSsh ? [] : ['--no-ssh']), '--port', String(port), '--data-dir', dataDir, ...args],
    wantsSsh ? { GATEHOUSE_SSH: 'on' } : {},
  );
  const [, url] = await proc.waitFor(/listening on (http:\/\/\S+)/);
  // a first start prints the admin token after the address; a restart prints none
  const secret = fresh ? (await proc.waitFor(/keep it:\s+(gh_\S+)\n/))[1]! : null;
  return { proc, url: url!, bootstrapSecret: secret };
}

// agents started by a test keep their state here rather than in the machine's /var/lib/gatehouse-agent
const TEST_STATE_DIR = join(tmpdir(), `gatehouse-agent-state-${process.pid}`);
process.once('exit', () => rmSync(TEST_STATE_DIR, { recursive: true, force: true }));

/** Starts `gatehouse agent` (the host-agent CLI) with the token in its environment and, unless `args` name one, the test process's state directory. */
export function startAgent(args: string[], token: string): Proc {
  const stateDir = args.includes('--state-dir') ? [] : ['--state-dir', TEST_STATE_DIR];
  return start(['agents/host-agent/src/cli.ts', ...args, ...stateDir], { GATEHOUSE_AGENT_TOKEN: token });
}

/**
 * Starts `gatehouse agent --plugin <id>` with its plugin configuration, checking drift every
 * 300 ms and discovering every `discoverMs` (the end-to-end tests of backend plugins).
 */
export function startPluginAgent(url: string, token: string, plugin: string, config: Record<string, unknown>, discoverMs: number): Proc {
  const args = ['--controller', url, '--plugin', plugin, '--plugin-config', JSON.stringify(config)];
  return startAgent([...args, '--drift-interval', '300', '--discover-interval', String(discoverMs)], token);
}

/** A GraphQL request over HTTP; throws on transport or GraphQL errors. */
export async function gql<T = any>(url: string, secret: string, query: string, variables?: Record<string, unknown>): Promise<T> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${secret}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await response.json()) as { data?: T; errors?: { message: string }[] };
  if (body.errors?.length) throw new Error(body.errors.map((e) => e.message).join('; '));
  return body.data!;
}

/** Polls `probe` until it returns a truthy value or `ms` pass. */
export async function until<T>(probe: () => Promise<T>, ms = 15_000, stepMs = 100): Promise<T> {
  const end = Date.now() + ms;
  let last = await probe();
  while (!last && Date.now() < end) {
    await new Promise((r) => setTimeout(r, stepMs));
    last = await probe();
  }
  return last;
}
