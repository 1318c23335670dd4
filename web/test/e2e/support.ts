/** What the browser tests share: a `gatehouse serve` process, Debian's Chromium, the API with a bearer token, polling. */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext } from 'playwright-core';

export const ROOT = resolve(fileURLToPath(new URL('../../..', import.meta.url)));
const CLI = join(ROOT, 'core/cli/dist/cli.js');
export const WEB_DIST = join(ROOT, 'web/dist');
export const CHROMIUM = process.env.GATEHOUSE_CHROMIUM ?? '/usr/bin/chromium';
/** Screenshots and measured figures: test artifacts, gitignored. */
export const ARTIFACTS = resolve(process.env.GATEHOUSE_UI_SCREENSHOTS ?? join(ROOT, 'web/.test-results/screenshots'));
/** In CI a system test may not be skipped. */
export const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
export const chromiumAvailable = existsSync(CHROMIUM);

/** A `gatehouse serve` process and what it printed. */
export interface Served {
  proc: ChildProcess;
  output(): string;
  /** The first match of `pattern` in the output (waits for it; fails when the process exits first). */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code (null when killed). */
  stop(graceMs?: number): Promise<number | null>;
}

/** Starts the built `gatehouse serve` serving the built UI, with `args` and `env` added. */
export function serve(dataDir: string, args: string[], env: Record<string, string> = {}): Served {
  let out = '';
  const proc = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--data-dir', dataDir, '--web-dir', WEB_DIST, ...args], {
    env: { ...process.env, DATABASE_URL: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
  proc.stderr!.on('data', (chunk: Buffer) => (out += chunk.toString()));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  return {
    proc,
    output: () => out,
    waitFor: async (pattern, timeoutMs = 90_000) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const match = pattern.exec(out);
        if (match) return match;
        if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`no ${pattern} in the controller's output:\n${out}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    stop: async (graceMs = 30_000) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** The admin's bootstrap token and one-time password as the first start prints them. */
export async function bootstrapCredentials(served: Served): Promise<{ api: string; origin: string; token: string; password: string }> {
  const api = (await served.waitFor(/listening on (http:\/\/\S+)/))[1]!;
  const token = (await served.waitFor(/keep it:\s+(gh_\S+)\n/))[1]!;
  const password = (await served.waitFor(/password: (\S+)\n/))[1]!;
  return { api, origin: new URL(api).origin, token, password };
}

/** A GraphQL client acting with `token`: the data, or an error with the GraphQL errors. */
export function graphqlClient(api: string, token: string) {
  return async (query: string, variables: Record<string, unknown> = {}) => {
    const response = await fetch(api, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ query, variables }),
    });
    const body = (await response.json()) as { data?: any; errors?: unknown[] };
    if (body.errors) throw new Error(JSON.stringify(body.errors));
    return body.data;
  };
}

/** Debian's Chromium, headless, with a fresh profile (removed by `close`). */
export async function launchChromium(): Promise<{ context: BrowserContext; close(): Promise<void> }> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), 'gh-ui-profile-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1280, height: 800 },
  });
  return {
    context,
    close: async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Polls `probe` until it returns a value (not undefined); fails after `timeoutMs`. */
export async function until<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A free TCP port on loopback. */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolvePort(port));
    });
  });
}
