/**
 * The Terminal tab in Chromium (Debian's, driven by playwright-core) against a real controller with
 * its SSH jump server (`gatehouse serve`, PGlite, no sandbox): the tab asks for a ticket, opens the
 * WebSocket to /terminal with no ticket or token in its URL, authenticates in its first message,
 * and shows the controller's reason when the instance cannot be reached (its host has no agent).
 * A terminal that logs in to a real sshd is tested in agents/host-agent/test/ssh-e2e.test.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = resolve(fileURLToPath(new URL('../../..', import.meta.url)));
const CHROMIUM = process.env.GATEHOUSE_CHROMIUM ?? '/usr/bin/chromium';
const SHOTS = resolve(process.env.GATEHOUSE_UI_SCREENSHOTS ?? join(ROOT, 'web/.test-results/screenshots'));

describe('the Terminal tab in Chromium', () => {
  let dataDir: string;
  let profile: string;
  let proc: ChildProcess;
  let out = '';
  let context: BrowserContext;
  let page: Page;
  let origin: string;
  let instanceId: string;

  const printed = async (pattern: RegExp) => {
    for (let i = 0; i < 600; i++) {
      const m = pattern.exec(out);
      if (m) return m[1]!;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`no ${pattern} in:\n${out.slice(-3000)}`);
  };

  beforeAll(async () => {
    mkdirSync(SHOTS, { recursive: true });
    dataDir = mkdtempSync(join(tmpdir(), 'gh-term-ui-data-'));
    profile = mkdtempSync(join(tmpdir(), 'gh-term-ui-profile-'));
    const args = ['serve', '--port', '0', '--ssh-port', '0', '--data-dir', dataDir, '--no-sandbox', '--no-proxy', '--web-dir', join(ROOT, 'web/dist')];
    proc = spawn(process.execPath, [join(ROOT, 'core/cli/dist/cli.js'), ...args], {
      env: { ...process.env, GATEHOUSE_SANDBOX: 'off', GATEHOUSE_PROXY: 'off', GATEHOUSE_SSH: 'on' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const api = await printed(/listening on (http:\/\/\S+)/);
    origin = new URL(api).origin;
    const token = await printed(/keep it:\s+(gh_\S+)\n/);
    await printed(/SSH jump server listening on (\S+)/);
    const gql = async (query: string, variables: Record<string, unknown> = {}) => {
      const response = await fetch(api, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({ query, variables }),
      });
      return ((await response.json()) as { data: any }).data;
    };
    await gql(`mutation { createIpPool(input: { name: "private", kind: PRIVATE, network: "br0", cidr: "10.78.0.0/24" }) { __typename } }`);
    const host = await gql(`mutation { createHost(input: { name: "h1", backend: "linux" }) { ... on CreateHostPayload { host { id } } } }`);
    const created = await gql(
      `mutation($h: ID!) { createInstance(input: { hostId: $h, name: "web1", nics: [{ network: "br0", addresses: ["10.78.0.10"] }] }) { ... on CreateInstancePayload { instance { id } } } }`,
      { h: host.createHost.host.id },
    );
    instanceId = created.createInstance.instance.id;
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1280, height: 900 },
    });
    page = context.pages()[0] ?? (await context.newPage());
    await page.goto(`${origin}/`);
    await page.getByLabel('Username').fill('admin');
    await page.getByLabel('Password').fill(await printed(/password: (\S+)\n/));
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Instances' }).waitFor();
  }, 180_000);

  afterAll(async () => {
    await context?.close();
    if (proc?.exitCode === null) {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await exited;
    }
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(profile, { recursive: true, force: true });
  });

  it('opens /terminal with the ticket in the first message only, and shows why the instance cannot be reached', async () => {
    const sockets: { url: string; sent: string[] }[] = [];
    page.on('websocket', (ws) => {
      const entry = { url: ws.url(), sent: [] as string[] };
      sockets.push(entry);
      ws.on('framesent', (frame) => entry.sent.push(typeof frame.payload === 'string' ? frame.payload : '<binary>'));
    });
    await page.goto(`${origin}/instances/${instanceId}/terminal`);
    await page.getByText('None learned yet').waitFor();
    expect(await page.getByLabel('Log in as').inputValue()).toBe('root');
    await page.getByRole('button', { name: 'Connect' }).click();
    const status = page.locator('[data-terminal-status="ended"]');
    await status.waitFor();
    expect(await status.textContent()).toBe('Terminal closed: instance web1 cannot be reached: the agent of host h1 is not connected.');
    await page.screenshot({ path: join(SHOTS, 'ui-terminal-unreachable.png'), fullPage: true });
    const terminal = sockets.find((s) => new URL(s.url).pathname === '/terminal')!;
    expect(new URL(terminal.url).search).toBe('');
    const first = JSON.parse(terminal.sent[0]!) as Record<string, unknown>;
    expect(first).toMatchObject({ type: 'auth', ticket: expect.stringMatching(/^ght_/) });
    expect(first.cols).toBeGreaterThan(20);
    expect(first.rows).toBeGreaterThan(5);
  });

  it('shows a bad login name at its field', async () => {
    await page.getByLabel('Log in as').fill('root; id');
    await page.getByRole('button', { name: 'Connect' }).click();
    const error = page.locator('.field-error[data-field="username"]');
    await error.waitFor();
    expect(await error.textContent()).toContain('must be a login name');
  });
});
