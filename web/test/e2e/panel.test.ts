/**
 * The panel in a real browser (Debian's chromium driven by playwright-core) against a real
 * controller (`gatehouse serve`, PGlite, no sandbox): sign in with the printed one-time password,
 * add a port forward from the instance's Port forwards tab, see it listed and turn APPLIED live
 * when the host reports it, see a typed validation error at its field, preview and apply a CSV
 * import, sign out. Screenshots go to GATEHOUSE_UI_SCREENSHOTS (default .test-results/).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ARTIFACTS, bootstrapCredentials, graphqlClient, launchChromium, serve, type Served } from './support.js';

describe('the web UI in Chromium', () => {
  let dataDir: string;
  let browser: Awaited<ReturnType<typeof launchChromium>>;
  let served: Served;
  let api: string;
  let origin: string;
  let token: string;
  let password: string;
  let context: BrowserContext;
  let page: Page;
  let hostId: string;
  let instanceId: string;

  let gql: ReturnType<typeof graphqlClient>;
  const shot = (name: string) => page.screenshot({ path: join(ARTIFACTS, `ui-${name}.png`), fullPage: true });

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'gh-ui-data-'));
    served = serve(dataDir, ['--no-sandbox', '--no-proxy', '--no-ssh'], { GATEHOUSE_SANDBOX: 'off', GATEHOUSE_PROXY: 'off' });
    ({ api, origin, token, password } = await bootstrapCredentials(served));
    gql = graphqlClient(api, token);
    // a host, a pool and an instance, through the API
    await gql(`mutation { createIpPool(input: { name: "private", kind: PRIVATE, network: "br0", cidr: "10.77.0.0/24" }) { __typename } }`);
    const host = await gql(`mutation { createHost(input: { name: "h1", backend: "linux" }) { ... on CreateHostPayload { host { id } } } }`);
    hostId = host.createHost.host.id;
    const created = await gql(
      `mutation($h: ID!) { createInstance(input: { hostId: $h, name: "web1", nics: [{ network: "br0", addresses: ["10.77.0.10"] }] }) {
        ... on CreateInstancePayload { instance { id } } } }`,
      { h: hostId },
    );
    instanceId = created.createInstance.instance.id;
    browser = await launchChromium();
    context = browser.context;
    page = context.pages()[0] ?? (await context.newPage());
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await served?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('shows a wrong password at the password field, then signs in with the printed one', async () => {
    const consoleErrors: string[] = [];
    page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()));
    await page.goto(`${origin}/`);
    await page.getByLabel('Username').fill('admin');
    await page.getByLabel('Password').fill('not-the-password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    const error = page.locator('.field-error[data-field="password"]');
    await expect.poll(() => error.textContent()).toContain('the username or the password is wrong');
    expect(await page.getByLabel('Password').getAttribute('aria-invalid')).toBe('true');
    await shot('sign-in-error');
    await page.getByLabel('Password').fill(password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Instances' }).waitFor();
    await page.getByRole('link', { name: 'web1' }).waitFor();
    await shot('instances');
    // no CSP violation, no script error
    expect(consoleErrors).toEqual([]);
  });

  it('adds a port forward with the HTTP preset, lists it, and shows it APPLIED when the host reports it, without reload', async () => {
    await page.getByRole('link', { name: 'web1' }).click();
    await page.getByRole('link', { name: 'Port forwards' }).click();
    expect(page.url()).toBe(`${origin}/instances/${instanceId}/forwards`);
    await page.getByLabel('Preset').selectOption('HTTP');
    expect(await page.getByLabel('Instance port').inputValue()).toBe('80');
    await page.getByLabel('Host port').fill('8080');
    await page.getByRole('button', { name: 'Add port forward' }).click();
    const row = page.locator('table[aria-label="Port forwards"] tbody tr', { hasText: '8080' });
    await row.waitFor();
    expect(await row.textContent()).toContain('10.77.0.10:80');
    expect(await row.locator('.status').textContent()).toBe('PENDING');
    // the host's agent reports the forward applied: the badge changes through the subscription
    const state = await gql(`query($h: ID!) { host(id: $h) { desiredRevision } portForwards(hostId: $h) { edges { node { id } } } }`, { h: hostId });
    const forwardId = state.portForwards.edges[0].node.id;
    const reported = await gql(`mutation($input: ReportObjectStatusInput!) { reportObjectStatus(input: $input) { __typename } }`, {
      input: { hostId, revision: state.host.desiredRevision, objects: [{ objectId: forwardId, objectType: 'PORT_FORWARD', status: 'APPLIED' }] },
    });
    expect(reported.reportObjectStatus.__typename).toBe('ReportObjectStatusPayload');
    await expect.poll(() => row.locator('.status').textContent(), { timeout: 15_000 }).toBe('APPLIED');
    // the form is empty again, the preset too (it used to keep showing HTTP)
    expect(await page.getByLabel('Preset').inputValue()).toBe('');
    expect(await page.getByLabel('Instance port').inputValue()).toBe('');
    await shot('port-forwards');
  });

  it('shows a typed validation error beside the field it names', async () => {
    await page.getByLabel('Host port').fill('70000');
    await page.getByLabel('Instance port').fill('80');
    await page.getByRole('button', { name: 'Add port forward' }).click();
    const error = page.locator('.field-error[data-field="hostPort"]');
    await error.waitFor();
    expect(await error.textContent()).toContain('input.hostPort');
    expect(await page.getByLabel('Host port').getAttribute('aria-invalid')).toBe('true');
    await shot('forward-validation-error');
  });

  it('previews a CSV import row by row, then applies it', async () => {
    const csv = ['protocol,host_port,vm_ip,vm_port,note', 'tcp,10022,10.77.0.10,22,SSH', 'udp,5353,10.77.0.10,53,DNS', 'tcp,8443,10.77.0.10,443,HTTPS'].join(
      '\n',
    );
    await page.getByLabel('CSV', { exact: true }).fill(csv);
    await page.getByRole('button', { name: 'Preview import' }).click();
    const plan = page.locator('table[aria-label="Import plan"] tbody tr');
    await expect.poll(() => plan.count()).toBe(3);
    expect(await plan.allTextContents()).toEqual([
      expect.stringContaining('will be created'),
      expect.stringContaining('will be created'),
      expect.stringContaining('will be created'),
    ]);
    await shot('csv-plan');
    // nothing exists before the user confirms
    expect(await page.locator('table[aria-label="Port forwards"] tbody tr').count()).toBe(1);
    await page.getByRole('button', { name: 'Apply import' }).click();
    await page.getByText('Imported: 3 port forwards created.').waitFor();
    await expect.poll(() => page.locator('table[aria-label="Port forwards"] tbody tr').count()).toBe(4);
  });

  it("shows the period's traffic against a new quota on the Bandwidth tab", async () => {
    await page.getByRole('link', { name: 'Bandwidth' }).click();
    const usage = page.locator('.quota-usage');
    await expect.poll(() => usage.textContent()).toContain('No monthly quota');
    await page.getByLabel('Monthly quota (GB)').fill('5');
    await page.getByLabel('When the quota is used up').selectOption('THROTTLE');
    await page.getByLabel('Throttle to (Mbps)').fill('2');
    await page.getByRole('button', { name: 'Save limits' }).click();
    const meter = page.getByRole('meter', { name: 'Quota used' });
    await meter.waitFor();
    expect(await meter.getAttribute('aria-valuemax')).toBe('5000000000');
    expect(await meter.getAttribute('aria-valuenow')).toBe('0');
    expect(await usage.textContent()).toContain('0 B of 5 GB · within the quota');
    expect(await usage.getAttribute('data-quota-state')).toBe('NORMAL');
    expect(await usage.getAttribute('data-throttled')).toBe('false');
    await shot('bandwidth');
  });

  it('shows the overview, pools with a reservation, the audit log live with diffs, and a token once', async () => {
    const nav = page.getByRole('navigation', { name: 'Main' });
    await nav.getByRole('link', { name: 'Overview' }).click();
    const host = page.locator('table[aria-label="Hosts"] tbody tr', { hasText: 'h1' });
    await host.waitFor();
    expect(await host.textContent()).toContain('offline');
    // exact counts (the connections' totalCount), no "+"
    await expect.poll(() => page.locator('.counts').textContent()).toMatch(/^Instances1Port forwards4Web proxies0/);
    await shot('overview');

    await nav.getByRole('link', { name: 'IP pools' }).click();
    const poolRow = page.locator('table[aria-label="IP pools"] tbody tr', { hasText: 'private' });
    const reserved = async () => Number(/(\d+) reserved/.exec((await poolRow.textContent()) ?? '')?.[1]);
    await expect.poll(reserved).toBeGreaterThanOrEqual(0);
    const reservedBefore = await reserved();
    await page.getByRole('button', { name: 'Addresses of private' }).click();
    const held = page.getByRole('table', { name: 'Addresses of private' }).getByRole('row', { name: /10\.77\.0\.10/ });
    await held.waitFor();
    // the address names its instance (a link) and the instance's owner, not a NIC id
    expect(await held.textContent()).toMatch(/allocated · web1 \(admin\)/);
    expect(await held.getByRole('link', { name: 'web1' }).getAttribute('href')).toBe(`/instances/${instanceId}`);
    await page.getByLabel('Address', { exact: true }).fill('10.77.0.99');
    await page.getByLabel('Reservation note').fill('kept for the router');
    await page.getByRole('button', { name: 'Reserve', exact: true }).click();
    await page.getByRole('table', { name: 'Addresses of private' }).getByText('kept for the router').waitFor();
    await expect.poll(reserved).toBe(reservedBefore + 1);
    await shot('pools');

    await nav.getByRole('link', { name: 'Audit log' }).click();
    await page.getByRole('table', { name: 'Audit entries' }).getByText('kept for the router').first().waitFor();
    // live: a change made elsewhere appears without reload
    await gql(`mutation($h: ID!) { updateHost(input: { hostId: $h, reservedPorts: ["2222"] }) { __typename } }`, { h: hostId });
    // the update's entry, not the host's creation entry (which also lists reservedPorts, as [])
    const hostEntry = page
      .locator('table[aria-label="Audit entries"] tbody tr')
      .filter({ has: page.locator('.diff .added', { hasText: /reservedPorts.*2222/ }) });
    await hostEntry.waitFor();
    // a diff against the old value: the old list removed, the new one added
    expect(await hostEntry.locator('.diff .removed').allTextContents()).toEqual(expect.arrayContaining(['- reservedPorts: []\n']));
    expect(await hostEntry.locator('.diff .added').allTextContents()).toEqual(
      expect.arrayContaining(['+ reservedPorts.0.end: 2222\n', '+ reservedPorts.0.start: 2222\n']),
    );
    // the actor by name, not by id
    expect(await hostEntry.locator('.actor').textContent()).toBe('admin');
    await shot('audit');

    await nav.getByRole('link', { name: 'Account' }).click();
    await page.getByLabel('Token name').fill('billing');
    await page.getByRole('button', { name: 'Create token' }).click();
    const secret = await page.locator('.token-secret').textContent();
    expect(secret).toMatch(/^gh_/);
    // the secret works, and once dismissed it is nowhere on the page
    const me = await graphqlClient(api, secret!)(`{ me { name } }`);
    expect(me.me.name).toBe('admin');
    await page.getByRole('button', { name: 'I have copied it' }).click();
    expect(await page.content()).not.toContain(secret);
    await page.getByRole('table', { name: 'API tokens' }).getByText('billing').waitFor();
    // an agent token: the host is chosen by name from the hosts
    await page.getByLabel('Token name').fill('h1-agent');
    await page.getByLabel('Scope').selectOption('AGENT');
    const hostSelect = page.getByLabel('Host', { exact: true });
    await expect.poll(() => hostSelect.locator('option').allTextContents()).toEqual(['Choose a host', 'h1']);
    await hostSelect.selectOption({ label: 'h1' });
    expect(await hostSelect.inputValue()).toBe(hostId);
    await page.getByRole('button', { name: 'Create token' }).click();
    await page.locator('.token-secret').waitFor();
    await shot('agent-token');
    await page.getByRole('button', { name: 'I have copied it' }).click();
    const agentRow = page.getByRole('table', { name: 'API tokens' }).getByRole('row', { name: /h1-agent/ });
    expect(await agentRow.textContent()).toContain('agent · host h1');

    await nav.getByRole('link', { name: 'Admin' }).click();
    await page.getByRole('table', { name: 'Users' }).getByText('admin').first().waitFor();
    await page.getByRole('table', { name: 'Host settings' }).getByText('2222').waitFor();
    await shot('admin');
    await page.setViewportSize({ width: 390, height: 844 });
    await shot('admin-phone');
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  it('shows the other tabs at a phone width and signs out', async () => {
    await page.getByRole('link', { name: 'Instances' }).click();
    await page.getByRole('link', { name: 'web1' }).click();
    await page.getByRole('link', { name: 'Firewall' }).click();
    await page.getByRole('heading', { name: 'Add rule' }).waitFor();
    await page.getByRole('link', { name: 'Network' }).click();
    await page.getByRole('table', { name: 'Network interfaces' }).waitFor();
    await page.setViewportSize({ width: 390, height: 844 });
    await shot('network-phone');
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in to Gatehouse' }).waitFor();
    // the session is revoked on the controller, not only forgotten by the tab
    const tokens = await gql(`{ me { tokens { kind revokedAt } } }`);
    const sessions = tokens.me.tokens.filter((t: { kind: string }) => t.kind === 'SESSION');
    expect(sessions).toHaveLength(1);
    expect(sessions[0].revokedAt).not.toBeNull();
  });
});
