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
 * sandbox: it is one per machine, and only sandbox.test.ts is about it.
 */
export async function spawnController(args: string[], env: Record<string, string> = {}): Promise<ControllerProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve', '--port', '0', '--no-sandbox', ...args], {
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
