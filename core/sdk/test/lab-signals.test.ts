/**
 * A process stopped by SIGINT (Ctrl-C on a bench) or SIGTERM leaves no namespace of its labs
 * behind, and a process that handles those signals itself keeps its own handling. As root: a child
 * process creates a lab namespace, prints its name and waits for the signal.
 */
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { labAvailable } from '../src/testkit/lab.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await labAvailable();
const LAB = fileURLToPath(new URL('../src/testkit/lab.ts', import.meta.url));

const namespaces = () => execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });

/** Runs a child that makes one lab namespace (after `prelude`), sends it `signal` once it printed the name; answers the name and how the child ended. */
async function interrupted(signal: NodeJS.Signals, prelude = ''): Promise<{ name: string; code: number | null; output: string }> {
  const script = `${prelude}
const { NetnsLab } = await import(${JSON.stringify(LAB)});
const ns = await new NetnsLab().namespace('sig');
console.log('ns=' + ns.name);
setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const name = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no namespace within 20 s:\n${output}`)), 20_000);
    const onData = (d: Buffer) => {
      output += d.toString();
      const m = /ns=(\S+)/.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
  });
  child.kill(signal);
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  return { name, code, output };
}

describe.skipIf(!available && !REQUIRE_SYSTEM)('a lab interrupted by a signal', () => {
  it.each([
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const)('%s: the process exits with status %i and its namespace is gone', async (signal, status) => {
    const { name, code, output } = await interrupted(signal);
    expect(code, output).toBe(status);
    expect(namespaces()).not.toContain(name);
  });

  it('a process with its own SIGINT handler keeps it (the lab installs none), and cleans up when it exits', async () => {
    const { name, code, output } = await interrupted('SIGINT', "process.on('SIGINT', () => { console.log('own handler'); process.exit(7); });");
    expect(output).toContain('own handler');
    expect(code).toBe(7);
    expect(namespaces()).not.toContain(name);
  });
});
