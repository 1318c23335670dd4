/**
 * `gatehouse serve` on the embedded default: the first start creates the admin and prints its
 * token once; a restart on the same PGlite data directory keeps everything and prints nothing.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { post } from '@gatehouse/server/testing';
import { spawnController, type ControllerProcess } from './support/processes.js';

const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-cli-'));
const running: ControllerProcess[] = [];
afterAll(async () => {
  await Promise.all(running.map((p) => p.stop()));
  rmSync(dataDir, { recursive: true, force: true });
});

it('prints the first admin token once and keeps state across a restart on PGlite', async () => {
  const env = { DATABASE_URL: '' };
  const first = await spawnController(['--data-dir', dataDir], env);
  running.push(first);
  await new Promise((r) => setTimeout(r, 200));
  const secret = /\n\s+(gh_[A-Za-z0-9_-]+)\n/.exec(first.output())?.[1];
  expect(secret).toBeDefined();
  const created = await post(first.url, secret!, 'mutation { createHost(input: { name: "persisted", backend: ESXI }) { __typename } }');
  expect(created.body.data.createHost.__typename).toBe('CreateHostPayload');
  await first.stop();

  const second = await spawnController(['--data-dir', dataDir], env);
  running.push(second);
  expect(second.output()).not.toContain('gh_');
  const hosts = await post(second.url, secret!, '{ hosts { edges { node { name backend } } } }');
  expect(hosts.body.data.hosts.edges).toEqual([{ node: { name: 'persisted', backend: 'esxi' } }]);
});

it('stops on SIGTERM while a 50,000-row import is being planned, with the import rolled back', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-cli-term-'));
  try {
    const c = await spawnController(['--data-dir', dir], { DATABASE_URL: '' });
    running.push(c);
    await new Promise((r) => setTimeout(r, 200));
    const secret = /\n\s+(gh_[A-Za-z0-9_-]+)\n/.exec(c.output())![1]!;
    const host = await post(c.url, secret, 'mutation { createHost(input: { name: "h", backend: LINUX }) { ... on CreateHostPayload { host { id } } } }');
    const hostId = host.body.data.createHost.host.id;
    await post(c.url, secret, 'mutation { createIpPool(input: { name: "p", kind: PRIVATE, network: "br", cidr: "10.61.0.0/24" }) { __typename } }');
    await post(
      c.url,
      secret,
      `mutation { createInstance(input: { hostId: "${hostId}", name: "v", nics: [{ network: "br", addresses: ["10.61.0.5"] }] }) { __typename } }`,
    );
    const csv = `protocol,host_port,vm_ip,vm_port\n${'tcp,,10.61.0.5,80\n'.repeat(50_000)}`;
    const importing = post(c.url, secret, 'mutation($input: ImportPortForwardsInput!) { importPortForwards(input: $input) { __typename } }', {
      input: { hostId, csv },
    }).catch((err: unknown) => err);
    await new Promise((r) => setTimeout(r, 300));
    const signalled = Date.now();
    const exited = new Promise<number | null>((resolve) => c.child.once('exit', (code) => resolve(code)));
    c.child.kill('SIGTERM');
    // the grace period is 5 s; a process that ignores the signal would still be here after 15
    const code = await Promise.race([exited, new Promise<'still running'>((r) => setTimeout(() => r('still running'), 15_000))]);
    expect(code).not.toBe('still running');
    expect(Date.now() - signalled).toBeLessThan(15_000);
    await importing;
    // nothing of the import was committed
    const again = await spawnController(['--data-dir', dir], { DATABASE_URL: '' });
    running.push(again);
    const count = await post(again.url, secret, `{ exportPortForwards(hostId: "${hostId}") }`);
    const lines = count.body.data.exportPortForwards.trim().split('\r\n').length - 1;
    expect([0, 50_000]).toContain(lines); // all or nothing
    await again.stop();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, 120_000);

it('serves GraphiQL and tokenless introspection only when --graphiql is on', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-cli-giql-'));
  try {
    const off = await spawnController(['--data-dir', dir, '--graphiql', 'off'], { DATABASE_URL: '' });
    running.push(off);
    await new Promise((r) => setTimeout(r, 200));
    const secret = /\n\s+(gh_[A-Za-z0-9_-]+)\n/.exec(off.output())![1]!;
    const page = await fetch(off.url, { headers: { accept: 'text/html' } });
    expect(await page.text()).not.toContain('GraphiQL');
    const anonymous = await post(off.url, null, '{ __schema { queryType { name } } }');
    expect(anonymous.body.errors?.[0]?.message).toMatch(/introspection/i);
    const withToken = await post(off.url, secret, '{ __schema { queryType { name } } }');
    expect(withToken.body.data.__schema.queryType.name).toBe('Query');
    await off.stop();
    const on = await spawnController(['--data-dir', dir], { DATABASE_URL: '', NODE_ENV: '' });
    running.push(on);
    expect(await (await fetch(on.url, { headers: { accept: 'text/html' } })).text()).toContain('GraphiQL');
    expect((await post(on.url, null, '{ __schema { queryType { name } } }')).body.data.__schema.queryType.name).toBe('Query');
    await on.stop();
    const production = await spawnController(['--data-dir', dir], { DATABASE_URL: '', NODE_ENV: 'production' });
    running.push(production);
    expect((await post(production.url, null, '{ __schema { queryType { name } } }')).body.errors?.[0]?.message).toMatch(/introspection/i);
    await production.stop();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, 120_000);
