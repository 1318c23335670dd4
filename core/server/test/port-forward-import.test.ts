/** CSV import and export of port forwards, on PGlite and PostgreSQL. */
import { beforeAll, describe, expect, it } from 'vitest';
import { ERROR_FIELDS, type Client } from '../src/testing/api.js';
import { createPool } from '../src/testing/fixtures.js';
import { storeBackends } from '../src/testing/stores.js';
import { useStoreApi } from './support/suite.js';

const backends = await storeBackends();

const IMPORT = `mutation($input: ImportPortForwardsInput!) { importPortForwards(input: $input) { __typename
  ... on ImportPortForwardsPayload { result { dryRun applied created unchanged conflicts invalid rows { row action reason column portForward { hostPorts { start end } targetAddress } } } }
  ${ERROR_FIELDS} } }`;

async function importCsv(client: Client, hostId: string, csv: string, dryRun = false) {
  const r = await client(IMPORT, { input: { hostId, csv, dryRun } });
  if (r.errors) throw new Error(JSON.stringify(r.errors));
  return r.data!.importPortForwards;
}

describe.each(backends)('CSV import of port forwards on $name', (backend) => {
  const ctx = useStoreApi(backend, 'host-csv-unused');
  let hostId: string;
  let bob: { client: Client; id: string };

  beforeAll(async () => {
    const host = await ctx.api.admin(
      `mutation { createHost(input: { name: "gw-csv", backend: LINUX, reservedPorts: ["2222"], publicAddresses: ["203.0.113.20"] }) { ... on CreateHostPayload { host { id } } } }`,
    );
    hostId = host.data!.createHost.host.id;
    await createPool(ctx.api.admin, { name: 'csv-pool', kind: 'PRIVATE', network: 'br-csv', cidr: '10.0.0.0/24', gateway: '10.0.0.1' });
    bob = await ctx.api.tenant('bob-csv');
    for (const [name, address, ownerId] of [
      ['vm-5', '10.0.0.5', undefined],
      ['vm-6', '10.0.0.6', undefined],
      ['bob-vm', '10.0.0.9', bob.id],
    ] as const) {
      const r = await ctx.api.admin(
        `mutation($h: ID!, $n: String!, $a: String!, $o: ID) { createInstance(input: { hostId: $h, name: $n, ownerId: $o, nics: [{ network: "br-csv", addresses: [$a] }] }) { __typename ${ERROR_FIELDS} } }`,
        { h: hostId, n: name, a: address, o: ownerId },
      );
      expect(r.data!.createInstance.__typename).toBe('CreateInstancePayload');
    }
  });

  const reference = 'protocol,host_port,vm_ip,vm_port,note\ntcp,8080,10.0.0.5,80,Web\ntcp,10022,10.0.0.5,22,SSH\nudp,5353,10.0.0.6,53,DNS\n';

  it('plans the reference file in a dry run and changes nothing', async () => {
    const before = await ctx.api.snapshot();
    const r = await importCsv(ctx.api.admin, hostId, reference, true);
    expect(r.result).toMatchObject({ dryRun: true, applied: false, created: 3, unchanged: 0, conflicts: 0, invalid: 0 });
    expect(r.result.rows.map((x: { row: number; action: string }) => [x.row, x.action])).toEqual([
      [2, 'CREATE'],
      [3, 'CREATE'],
      [4, 'CREATE'],
    ]);
    expect(await ctx.api.snapshot()).toEqual(before);
  });

  it('imports it, and a second import of the same file changes nothing', async () => {
    const r = await importCsv(ctx.api.admin, hostId, reference);
    expect(r.result).toMatchObject({ applied: true, created: 3 });
    const again = await importCsv(ctx.api.admin, hostId, reference);
    expect(again.result).toMatchObject({ applied: true, created: 0, unchanged: 3 });
  });

  it('plans each bad row with its line, column and reason', async () => {
    const csv = [
      '\uFEFFprotocol,host_port,vm_ip,vm_port,note,source_cidrs',
      'tcp,8080,10.0.0.6,80,taken,',
      'sctp,9000,10.0.0.5,80,bad protocol,',
      'tcp,9001,10.0.0.77,80,not mine,',
      "tcp,9002,10.0.0.9,80,bob's vm,",
      'tcp,0,10.0.0.5,80,port 0,',
      'tcp,9003-9004,10.0.0.5,80-82,lengths,',
      'tcp,2222,10.0.0.5,22,reserved,',
      'tcp,9005,10.0.0.5,80,"quoted, note",198.51.100.7/24',
      'tcp,9006,10.0.0.5,80,short',
      'udp,9007,10.0.0.5,80,dup a,',
      'both,9007,10.0.0.6,81,dup b,',
      'tcp,"9008,10.0.0.5,80,broken quote,',
    ].join('\r\n');
    const r = await importCsv(ctx.api.admin, hostId, csv, true);
    const byRow = Object.fromEntries(r.result.rows.map((x: { row: number; action: string; column: string | null; reason: string }) => [x.row, x]));
    expect(byRow[2]).toMatchObject({ action: 'CONFLICT', column: 'host_port', reason: expect.stringContaining('vm-5 (10.0.0.5:80)') });
    expect(byRow[3]).toMatchObject({ action: 'INVALID', column: 'protocol' });
    expect(byRow[4]).toMatchObject({ action: 'INVALID', column: 'vm_ip' });
    expect(byRow[5]).toMatchObject({ action: 'CREATE' }); // the admin may forward to bob's instance
    expect(byRow[6]).toMatchObject({ action: 'INVALID', column: 'host_port' });
    expect(byRow[7]).toMatchObject({ action: 'INVALID', column: 'host_port', reason: expect.stringContaining('has 2 ports') });
    expect(byRow[8]).toMatchObject({ action: 'INVALID', column: 'host_port', reason: expect.stringContaining('reserved') });
    expect(byRow[9]).toMatchObject({ action: 'INVALID', column: 'source_cidrs', reason: expect.stringContaining('host bits') });
    expect(byRow[10]).toMatchObject({ action: 'INVALID', reason: 'has 5 columns, the header has 6' });
    expect(byRow[11]).toMatchObject({ action: 'CREATE' });
    expect(byRow[12]).toMatchObject({ action: 'CONFLICT', reason: expect.stringContaining('row 11 of this file') });
    expect(byRow[13]).toMatchObject({ action: 'INVALID', reason: expect.stringContaining('never closed') });
  });

  it('refuses the real import of a file with any bad row, naming the row, and writes nothing', async () => {
    const before = await ctx.api.snapshot();
    const r = await importCsv(ctx.api.admin, hostId, 'protocol,host_port,vm_ip,vm_port,note\ntcp,9100,10.0.0.5,80,ok\ntcp,9101,10.0.0.5,99999,bad\n');
    expect(r).toMatchObject({ code: 'VALIDATION_FAILED', field: 'input.csv', value: 'row 3' });
    expect(r.message).toContain('vm_port');
    expect(await ctx.api.snapshot()).toEqual(before);
  });

  it('refuses a file without a header, with an unknown column, or over the size limit', async () => {
    expect(await importCsv(ctx.api.admin, hostId, 'tcp,8080,10.0.0.5,80,Web\n')).toMatchObject({ code: 'VALIDATION_FAILED', field: 'input.csv' });
    expect(await importCsv(ctx.api.admin, hostId, 'protocol,host_port,vm_ip,vm_port,colour\n')).toMatchObject({
      code: 'VALIDATION_FAILED',
      value: 'row 1 column 5',
    });
    const big = `protocol,host_port,vm_ip,vm_port,note\n${'tcp,9200,10.0.0.5,80,'.padEnd(1000, 'x')}\n`.repeat(9 * 1024);
    expect(await importCsv(ctx.api.admin, hostId, big, true)).toMatchObject({
      code: 'VALIDATION_FAILED',
      field: 'input.csv',
      message: expect.stringContaining('MiB'),
    });
  });

  it('plans rows in file order, syntax errors among them', async () => {
    const csv = 'protocol,host_port,vm_ip,vm_port,note\ntcp,9300,10.0.0.5,80,a\ntcp,"9301"x,10.0.0.5,80,b\ntcp,9302,10.0.0.5,80,c\n';
    const r = await importCsv(ctx.api.admin, hostId, csv, true);
    expect(r.result.rows.map((x: { row: number; action: string }) => [x.row, x.action])).toEqual([
      [2, 'CREATE'],
      [3, 'INVALID'],
      [4, 'CREATE'],
    ]);
    expect(r.result.rows[1].reason).toContain('after a closing quote');
  });

  it('refuses a file of more than 50,000 rows, in a dry run too, and writes nothing', async () => {
    const before = await ctx.api.snapshot();
    const csv = `protocol,host_port,vm_ip,vm_port,note\n${'tcp,,10.0.0.5,80,\n'.repeat(50_001)}`;
    for (const dryRun of [true, false]) {
      expect(await importCsv(ctx.api.admin, hostId, csv, dryRun)).toMatchObject({
        code: 'VALIDATION_FAILED',
        field: 'input.csv',
        message: expect.stringContaining('more than 50000 rows'),
      });
    }
    expect(await ctx.api.snapshot()).toEqual(before);
  }, 60_000);

  it('picks free host ports for rows without one, and keeps tenants to their own instances', async () => {
    const r = await importCsv(bob.client, hostId, 'protocol,host_port,vm_ip,vm_port\ntcp,,10.0.0.9,22\ntcp,,10.0.0.9,80\ntcp,,10.0.0.5,80\n', true);
    expect(r.result.rows.map((x: { action: string }) => x.action)).toEqual(['CREATE', 'CREATE', 'INVALID']);
    expect(r.result.rows[0].portForward.hostPorts).toEqual({ start: 1024, end: 1024 });
    expect(r.result.rows[1].portForward.hostPorts).toEqual({ start: 1025, end: 1025 });
    const conflict = await importCsv(bob.client, hostId, 'protocol,host_port,vm_ip,vm_port\ntcp,8080,10.0.0.9,80\n', true);
    expect(conflict.result.rows[0].reason).toContain('another tenant');
  });

  it('exports CSV that imports back unchanged', async () => {
    const exported = (await ctx.api.admin(`query($h: ID!) { exportPortForwards(hostId: $h) }`, { h: hostId })).data!.exportPortForwards as string;
    expect(exported.split('\r\n')[0]).toBe('protocol,host_port,vm_ip,vm_port,note,host_address,source_cidrs,rate_limit,targets');
    expect(exported).toContain('tcp,8080,10.0.0.5,80,Web,,');
    const r = await importCsv(ctx.api.admin, hostId, exported, true);
    expect(r.result).toMatchObject({ created: 0, conflicts: 0, invalid: 0, unchanged: 3 });
    const bobs = (await bob.client(`query($h: ID!) { exportPortForwards(hostId: $h) }`, { h: hostId })).data!.exportPortForwards as string;
    expect(bobs.trim().split('\r\n')).toHaveLength(1);
  });

  it("exports one instance's forwards with instanceId, the header alone for another tenant's instance, and refuses a malformed id", async () => {
    const EXPORT = `query($h: ID!, $i: ID) { exportPortForwards(hostId: $h, instanceId: $i) }`;
    const list = await ctx.api.admin(`query($h: ID!) { instances(hostId: $h, first: 50) { edges { node { id name } } } }`, { h: hostId });
    const idOf = (name: string) => list.data!.instances.edges.find((e: { node: { name: string } }) => e.node.name === name).node.id as string;
    const header = 'protocol,host_port,vm_ip,vm_port,note,host_address,source_cidrs,rate_limit,targets';

    const vm5 = (await ctx.api.admin(EXPORT, { h: hostId, i: idOf('vm-5') })).data!.exportPortForwards as string;
    expect(vm5.trim().split('\r\n')).toEqual([header, 'tcp,8080,10.0.0.5,80,Web,,,,', 'tcp,10022,10.0.0.5,22,SSH,,,,']);
    const vm6 = (await ctx.api.admin(EXPORT, { h: hostId, i: idOf('vm-6') })).data!.exportPortForwards as string;
    expect(vm6.trim().split('\r\n')).toEqual([header, 'udp,5353,10.0.0.6,53,DNS,,,,']);

    const notBobs = (await bob.client(EXPORT, { h: hostId, i: idOf('vm-5') })).data!.exportPortForwards as string;
    expect(notBobs.trim().split('\r\n')).toEqual([header]);

    const bad = await ctx.api.admin(EXPORT, { h: hostId, i: 'not an id' });
    expect(bad.data).toBeNull();
    expect(bad.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION_FAILED', field: 'instanceId', value: 'not an id' });
  });
});
