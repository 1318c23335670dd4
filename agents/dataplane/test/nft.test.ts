/**
 * nft through JSON in a network namespace of our own: atomic replace, idempotent re-apply,
 * a failed transaction leaving the previous ruleset intact, and real TCP packets dropped by it.
 */
import { NetnsLab, labAvailable, type LabNamespace } from '@gatehouse/sdk/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NftError, applyNft, deleteTable, listTable, replaceTable, type NftCommand } from '../src/nft.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await labAvailable();

it('can create network namespaces (root) here', () => {
  if (!REQUIRE_SYSTEM && !available) return; // skipped locally without root; CI requires it
  expect(available).toBe(true);
});

const T = { family: 'inet', table: 'gatehouse' };
const inputChain = (port: number): NftCommand[] => [
  { add: { chain: { ...T, name: 'input', type: 'filter', hook: 'input', prio: 0, policy: 'accept' } } },
  { add: { counter: { ...T, name: 'blocked' } } },
  {
    add: {
      rule: {
        ...T,
        chain: 'input',
        expr: [{ match: { op: '==', left: { payload: { protocol: 'tcp', field: 'dport' } }, right: port } }, { counter: 'blocked' }, { drop: null }],
      },
    },
  },
];

/** A TCP connect from one namespace to another, reporting whether it was accepted. */
async function connects(from: LabNamespace, host: string, port: number): Promise<boolean> {
  const code = `const s=require('net').connect({host:${JSON.stringify(host)},port:${port},timeout:700});s.on('connect',()=>{console.log('yes');s.destroy()});s.on('timeout',()=>{console.log('no');s.destroy()});s.on('error',()=>console.log('no'))`;
  return (await from.exec(process.execPath, ['-e', code])).trim() === 'yes';
}

describe.skipIf(!available && !REQUIRE_SYSTEM)('nft JSON transactions in a lab namespace', () => {
  const lab = new NetnsLab();
  let server: LabNamespace;
  let client: LabNamespace;
  let stopServer: (() => void) | undefined;

  beforeAll(async () => {
    server = await lab.namespace('srv');
    client = await lab.namespace('cli');
    await lab.link(client, '192.0.2.1/24', server, '192.0.2.2/24');
    // a TCP server on 8080 inside the server namespace, for as long as the tests run
    const { spawn } = await import('node:child_process');
    const child = spawn(
      'ip',
      ['netns', 'exec', server.name, process.execPath, '-e', "require('net').createServer(c=>{c.on('error',()=>{});c.end('hi')}).listen(8080,'0.0.0.0')"],
      { stdio: 'ignore' },
    );
    stopServer = () => child.kill('SIGTERM');
    for (let i = 0; i < 50 && !(await connects(client, '192.0.2.2', 8080)); i++) await new Promise((r) => setTimeout(r, 100));
  });
  afterAll(async () => {
    stopServer?.();
    await lab.cleanup();
  });

  it('replaces a table atomically and re-applying the same content changes nothing', async () => {
    expect(await listTable('inet', 'gatehouse', { netns: server.name })).toBeUndefined();
    await applyNft(replaceTable('inet', 'gatehouse', inputChain(9999)), { netns: server.name });
    const first = await listTable('inet', 'gatehouse', { netns: server.name });
    expect(first!.some((o) => 'rule' in o)).toBe(true);
    await applyNft(replaceTable('inet', 'gatehouse', inputChain(9999)), { netns: server.name });
    const strip = (objs: Record<string, unknown>[]) => JSON.stringify(objs).replace(/"handle":\d+/g, '');
    expect(strip((await listTable('inet', 'gatehouse', { netns: server.name }))!)).toBe(strip(first!));
  });

  it('drops real TCP packets by rule, and lets them through again when the rule goes', async () => {
    expect(await connects(client, '192.0.2.2', 8080)).toBe(true);
    await applyNft(replaceTable('inet', 'gatehouse', inputChain(8080)), { netns: server.name });
    expect(await connects(client, '192.0.2.2', 8080)).toBe(false);
    const listed = await listTable('inet', 'gatehouse', { netns: server.name });
    const counter = listed!.find((o) => 'counter' in o) as { counter: { packets: number } };
    expect(counter.counter.packets).toBeGreaterThan(0);
    await applyNft(replaceTable('inet', 'gatehouse', inputChain(9999)), { netns: server.name });
    expect(await connects(client, '192.0.2.2', 8080)).toBe(true);
  });

  it('keeps the previous ruleset whole when a transaction fails midway', async () => {
    await applyNft(replaceTable('inet', 'gatehouse', inputChain(8080)), { netns: server.name });
    const before = await listTable('inet', 'gatehouse', { netns: server.name });
    const broken = replaceTable('inet', 'gatehouse', [...inputChain(7000), { add: { rule: { ...T, chain: 'no-such-chain', expr: [{ accept: null }] } } }]);
    await expect(applyNft(broken, { netns: server.name })).rejects.toBeInstanceOf(NftError);
    expect(JSON.stringify(await listTable('inet', 'gatehouse', { netns: server.name }))).toBe(JSON.stringify(before));
    expect(await connects(client, '192.0.2.2', 8080)).toBe(false);
  });

  it("deletes the table, also when it is already gone, and leaves the host's own ruleset alone", async () => {
    await deleteTable('inet', 'gatehouse', { netns: server.name });
    await deleteTable('inet', 'gatehouse', { netns: server.name });
    expect(await listTable('inet', 'gatehouse', { netns: server.name })).toBeUndefined();
    expect(await connects(client, '192.0.2.2', 8080)).toBe(true);
  });
});
