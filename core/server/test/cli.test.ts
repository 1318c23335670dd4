/**
 * `gatehouse serve` on the embedded default: the first start creates the admin and prints its
 * token once; a restart on the same PGlite data directory keeps everything and prints nothing.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { post, spawnController, type ControllerProcess } from './support/processes.js';

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
  expect(hosts.body.data.hosts.edges).toEqual([{ node: { name: 'persisted', backend: 'ESXI' } }]);
});
