/**
 * Editing port forwards in place (`updatePortForward`) through the GraphQL API on PGlite and
 * PostgreSQL: the same validation as a create, PORT_CONFLICT and one winner per host port under
 * concurrency (edit against edit, edit against create), quotas, tenants, audit before/after, and
 * the status back to PENDING in a new revision until the agent reports it APPLIED.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { ERROR_FIELDS, type Client } from '../src/testing/api.js';
import { createPool } from '../src/testing/fixtures.js';
import { storeBackends } from '../src/testing/stores.js';
import { useStoreApi } from './support/suite.js';

const backends = await storeBackends();

const FIELDS = 'id protocol hostAddress hostPorts { start end } targetAddress targetPorts { start end } sourceCidrs status statusError note changedRevision';
const CREATE = `mutation($input: CreatePortForwardInput!) { createPortForward(input: $input) { __typename ... on CreatePortForwardPayload { portForward { ${FIELDS} } } ${ERROR_FIELDS} } }`;
const UPDATE = `mutation($input: UpdatePortForwardInput!) { updatePortForward(input: $input) { __typename ... on UpdatePortForwardPayload { portForward { ${FIELDS} } } ${ERROR_FIELDS} } }`;

async function create(client: Client, input: Record<string, unknown>) {
  const r = await client(CREATE, { input });
  if (r.errors) throw new Error(JSON.stringify(r.errors));
  return r.data!.createPortForward;
}

async function update(client: Client, input: Record<string, unknown>) {
  const r = await client(UPDATE, { input });
  if (r.errors) throw new Error(JSON.stringify(r.errors));
  return r.data!.updatePortForward;
}

describe.each(backends)('editing port forwards on $name', (backend) => {
  const ctx = useStoreApi(backend, 'host-pf-edit');
  let hostId: string;
  let vm: { id: string; nics: { addresses: { address: string }[] }[] };
  let bob: { client: Client; id: string; secret: string };
  let bobVmId: string;

  const host = async () =>
    (await ctx.api.admin(`query($id: ID!) { host(id: $id) { desiredRevision } }`, { id: hostId })).data!.host as { desiredRevision: number };
  const get = async (id: string) => (await ctx.api.admin(`query($id: ID!) { portForward(id: $id) { ${FIELDS} } }`, { id })).data!.portForward;
  const audit = async (id: string) =>
    (await ctx.api.admin(`query($id: String!) { auditLog(objectId: $id) { edges { node { action before after } } } }`, { id })).data!.auditLog.edges.map(
      (e: { node: unknown }) => e.node,
    );

  beforeAll(async () => {
    const h = await ctx.api.admin(
      `mutation { createHost(input: { name: "gw-edit", backend: LINUX, portRangeStart: 20000, portRangeEnd: 20200, reservedPorts: ["20150-20159"], publicAddresses: ["203.0.113.20", "203.0.113.21"] }) { ... on CreateHostPayload { host { id } } } }`,
    );
    hostId = h.data!.createHost.host.id;
    await createPool(ctx.api.admin, { name: 'edit-v4', kind: 'PRIVATE', network: 'br-edit', cidr: '10.6.0.0/24' });
    const created = await ctx.api.admin(
      `mutation($h: ID!) { createInstance(input: { hostId: $h, name: "vm-edit", nics: [{ network: "br-edit", addresses: ["10.6.0.5", "10.6.0.6"] }] }) { ... on CreateInstancePayload { instance { id nics { addresses { address } } } } } }`,
      { h: hostId },
    );
    vm = created.data!.createInstance.instance;
    bob = await ctx.api.tenant('bob-edit', { quotaForwardedPorts: 3 });
    const bobVm = await ctx.api.admin(
      `mutation($h: ID!, $o: ID!) { createInstance(input: { hostId: $h, ownerId: $o, name: "bob-vm", nics: [{ network: "br-edit", allocate: [IPV4] }] }) { ... on CreateInstancePayload { instance { id } } } }`,
      { h: hostId, o: bob.id },
    );
    bobVmId = bobVm.data!.createInstance.instance.id;
  });

  it('changes note, target port, allow-list and host port in place: same id, PENDING in a new revision, audited before and after', async () => {
    const f = (await create(ctx.api.admin, { instanceId: vm.id, protocol: 'TCP', hostPort: '20022', targetPort: '22', note: 'SSH' })).portForward;
    const edits: [Record<string, unknown>, Record<string, unknown>][] = [
      [{ note: 'SSH (admin)' }, { note: 'SSH (admin)', hostPorts: { start: 20022, end: 20022 }, targetPorts: { start: 22, end: 22 } }],
      [{ targetPort: '2222' }, { targetPorts: { start: 2222, end: 2222 }, note: 'SSH (admin)' }],
      [{ sourceCidrs: ['198.51.100.7', '2001:db8::/48'] }, { sourceCidrs: ['198.51.100.7/32', '2001:db8::/48'] }],
      [
        { hostPort: '20023', sourceCidrs: null },
        { hostPorts: { start: 20023, end: 20023 }, sourceCidrs: [], targetPorts: { start: 2222, end: 2222 } },
      ],
      [
        { targetAddress: '10.6.0.6', hostAddress: '203.0.113.21' },
        { targetAddress: '10.6.0.6', hostAddress: '203.0.113.21' },
      ],
      [
        { hostAddress: null, note: null },
        { hostAddress: null, note: '' },
      ],
    ];
    for (const [input, expected] of edits) {
      const before = await host();
      const r = await update(ctx.api.admin, { portForwardId: f.id, ...input });
      expect(r.__typename, JSON.stringify(r)).toBe('UpdatePortForwardPayload');
      expect(r.portForward).toMatchObject({ id: f.id, status: 'PENDING', ...expected, changedRevision: before.desiredRevision + 1 });
      expect((await host()).desiredRevision).toBe(before.desiredRevision + 1);
    }
    const entries = await audit(f.id);
    expect(entries.map((e: { action: string }) => e.action).filter((a: string) => a === 'portForward.update')).toHaveLength(edits.length);
    const hostMove = entries.find(
      (e: { after: { hostPortStart: number } | null; before: { hostPortStart: number } | null }) =>
        e.after?.hostPortStart === 20023 && e.before?.hostPortStart === 20022,
    );
    expect(hostMove).toMatchObject({ action: 'portForward.update', before: { targetPortStart: 2222 }, after: { targetPortStart: 2222 } });
    // the old host port is free again at once
    expect((await create(ctx.api.admin, { instanceId: vm.id, protocol: 'TCP', hostPort: '20022', targetPort: '80' })).__typename).toBe(
      'CreatePortForwardPayload',
    );
  });

  it('exports an edited forward as it is now, and its export imports as UNCHANGED (the CSV format is unchanged)', async () => {
    const f = (await create(ctx.api.admin, { instanceId: vm.id, protocol: 'TCP', hostPort: '20080', targetPort: '80', note: 'web' })).portForward;
    await update(ctx.api.admin, { portForwardId: f.id, hostPort: '20081', targetPort: '8080', sourceCidrs: ['198.51.100.0/24'], note: 'web, edited' });
    const csv = (await ctx.api.admin(`query($h: ID!) { exportPortForwards(hostId: $h) }`, { h: hostId })).data!.exportPortForwards as string;
    const [header, ...rows] = csv.trim().split('\r\n');
    expect(header).toBe('protocol,host_port,vm_ip,vm_port,note,host_address,source_cidrs,rate_limit,targets');
    expect(rows).toContain('tcp,20081,10.6.0.5,8080,"web, edited",,198.51.100.0/24,,');
    expect(rows.some((r) => r.startsWith('tcp,20080,'))).toBe(false);
    const plan = await ctx.api.admin(
      `mutation($input: ImportPortForwardsInput!) { importPortForwards(input: $input) { ... on ImportPortForwardsPayload { result { created unchanged conflicts invalid } } ${ERROR_FIELDS} } }`,
      { input: { hostId, csv, dryRun: true } },
    );
    expect(plan.data!.importPortForwards.result).toEqual({ created: 0, unchanged: rows.length, conflicts: 0, invalid: 0 });
  });

  it('carries new-connection rate limits: created, edited, removed, checked, and in the desired state only when set', async () => {
    const doc = async (id: string) => {
      const state = await ctx.api.admin(`query($h: ID!) { hostDesiredState(hostId: $h) { document } }`, { h: hostId });
      return (state.data!.hostDesiredState.document as { instances: { portForwards: Record<string, unknown>[] }[] }).instances
        .flatMap((i) => i.portForwards)
        .find((p) => p.id === id)!;
    };
    const limited = await ctx.api.admin(
      `mutation($input: CreatePortForwardInput!) { createPortForward(input: $input) { ... on CreatePortForwardPayload { portForward { id rateLimit { perSource total burst action } } } ${ERROR_FIELDS} } }`,
      { input: { instanceId: vm.id, protocol: 'TCP', hostPort: '20090', targetPort: '90', rateLimit: { perSource: 50 } } },
    );
    const f = limited.data!.createPortForward.portForward;
    expect(f.rateLimit).toEqual({ perSource: 50, total: null, burst: 5, action: 'DROP' });
    expect((await doc(f.id)).rateLimit).toEqual({ perSource: 50, total: null, burst: 5, action: 'drop' });
    const RL = `mutation($input: UpdatePortForwardInput!) { updatePortForward(input: $input) { ... on UpdatePortForwardPayload { portForward { rateLimit { perSource total burst action } status } } ${ERROR_FIELDS} } }`;
    const edited = await ctx.api.admin(RL, { input: { portForwardId: f.id, rateLimit: { total: 1000, perSource: 20, action: 'REJECT' } } });
    expect(edited.data!.updatePortForward.portForward).toEqual({ rateLimit: { perSource: 20, total: 1000, burst: 100, action: 'REJECT' }, status: 'PENDING' });
    // other edits keep the limits
    expect((await ctx.api.admin(RL, { input: { portForwardId: f.id, note: 'limited' } })).data!.updatePortForward.portForward.rateLimit).toMatchObject({
      perSource: 20,
    });
    for (const [rateLimit, field] of [
      [{}, 'input.rateLimit'],
      [{ perSource: 0 }, 'input.rateLimit.perSource'],
      [{ total: 2_000_000 }, 'input.rateLimit.total'],
      [{ perSource: 5, burst: -1 }, 'input.rateLimit.burst'],
    ] as const) {
      expect((await ctx.api.admin(RL, { input: { portForwardId: f.id, rateLimit } })).data!.updatePortForward, JSON.stringify(rateLimit)).toMatchObject({
        code: 'VALIDATION_FAILED',
        field,
      });
    }
    const removed = await ctx.api.admin(RL, { input: { portForwardId: f.id, rateLimit: null } });
    expect(removed.data!.updatePortForward.portForward.rateLimit).toBeNull();
    expect(await doc(f.id)).not.toHaveProperty('rateLimit');
  });

  it('imports and exports rate limits in the optional rate_limit column; the reference format still imports', async () => {
    const IMPORT = `mutation($input: ImportPortForwardsInput!) { importPortForwards(input: $input) { ... on ImportPortForwardsPayload { result { applied rows { action column reason portForward { hostPorts { start } rateLimit { perSource total burst action } } } } } ${ERROR_FIELDS} } }`;
    const run = async (csv: string, dryRun = false) =>
      (await ctx.api.admin(IMPORT, { input: { hostId, csv, dryRun } })).data!.importPortForwards.result as {
        applied: boolean;
        rows: { action: string; column: string | null; reason: string | null; portForward: { rateLimit: unknown } | null }[];
      };
    const bad = await run(
      'protocol,host_port,vm_ip,vm_port,rate_limit\ntcp,20170,10.6.0.5,120,per_source=x\ntcp,20171,10.6.0.5,121,total=0\ntcp,20172,10.6.0.5,122,speed=3\n',
      true,
    );
    expect(bad.rows.map((r) => [r.action, r.column])).toEqual([
      ['INVALID', 'rate_limit'],
      ['INVALID', 'rate_limit'],
      ['INVALID', 'rate_limit'],
    ]);
    const ok = await run(
      'protocol,host_port,vm_ip,vm_port,note,rate_limit\ntcp,20173,10.6.0.5,123,limited,per_source=50 total=1000 action=reject\ntcp,20174,10.6.0.5,124,bare,30\n',
    );
    expect(ok.applied).toBe(true);
    expect(ok.rows.map((r) => r.portForward!.rateLimit)).toEqual([
      { perSource: 50, total: 1000, burst: 100, action: 'REJECT' },
      { perSource: 30, total: null, burst: 5, action: 'DROP' },
    ]);
    // the reference format (five columns) imports as before
    expect((await run('protocol,host_port,vm_ip,vm_port,note\ntcp,20175,10.6.0.5,125,plain\n')).rows[0]).toMatchObject({
      action: 'CREATE',
      portForward: { rateLimit: null },
    });
    const csv = (await ctx.api.admin(`query($h: ID!) { exportPortForwards(hostId: $h) }`, { h: hostId })).data!.exportPortForwards as string;
    expect(csv).toContain('tcp,20173,10.6.0.5,123,limited,,,per_source=50 total=1000 burst=100 action=reject,\r\n');
    expect(csv).toContain('tcp,20174,10.6.0.5,124,bare,,,per_source=30 burst=5 action=drop,\r\n');
    expect(csv).toContain('tcp,20175,10.6.0.5,125,plain,,,,\r\n');
  });

  it('goes PENDING → APPLIED when the agent reports the new revision, and ignores a report of the old one', async () => {
    const f = (await create(ctx.api.admin, { instanceId: vm.id, protocol: 'UDP', hostPort: '20053', targetPort: '53' })).portForward;
    const me = await ctx.api.admin(`{ me { id } }`);
    const token = await ctx.api.admin(
      `mutation($u: ID!, $h: ID!) { createApiToken(input: { userId: $u, name: "agent-edit", scope: AGENT, hostId: $h }) { ... on CreateApiTokenPayload { created { secret } } } }`,
      { u: me.data!.me.id, h: hostId },
    );
    const agent = ctx.api.clientFor(token.data!.createApiToken.created.secret);
    const report = (revision: number) =>
      agent(`mutation($input: ReportObjectStatusInput!) { reportObjectStatus(input: $input) { __typename ${ERROR_FIELDS} } }`, {
        input: { hostId, revision, objects: [{ objectType: 'PORT_FORWARD', objectId: f.id, status: 'APPLIED' }] },
      });
    const first = (await host()).desiredRevision;
    await report(first);
    expect((await get(f.id)).status).toBe('APPLIED');
    const edited = await update(ctx.api.admin, { portForwardId: f.id, targetPort: '5353' });
    expect(edited.portForward).toMatchObject({ status: 'PENDING', changedRevision: first + 1 });
    // the agent applied the old version: that says nothing about the edit
    await report(first);
    expect((await get(f.id)).status).toBe('PENDING');
    await report(first + 1);
    expect(await get(f.id)).toMatchObject({ status: 'APPLIED', targetPorts: { start: 5353, end: 5353 } });
    const state = await ctx.api.admin(`query($h: ID!) { hostDesiredState(hostId: $h) { document } }`, { h: hostId });
    const doc = state.data!.hostDesiredState.document as { instances: { portForwards: { id: string; targetPorts: { start: number } }[] }[] };
    expect(doc.instances.flatMap((i) => i.portForwards).find((p) => p.id === f.id)?.targetPorts.start).toBe(5353);
  });

  it('refuses what a create refuses, naming the field, and changes nothing', async () => {
    const f = (await create(ctx.api.admin, { instanceId: vm.id, protocol: 'TCP', hostPort: '20030', targetPort: '30', note: 'keep' })).portForward;
    const bad: [Record<string, unknown>, string, string][] = [
      [{ targetPort: '0' }, 'VALIDATION_FAILED', 'input.targetPort'],
      [{ hostPort: '70000' }, 'VALIDATION_FAILED', 'input.hostPort'],
      [{ hostPort: '20155' }, 'VALIDATION_FAILED', 'input.hostPort'],
      [{ hostPort: '19999' }, 'VALIDATION_FAILED', 'input.hostPort'],
      [{ targetPort: '30-31' }, 'VALIDATION_FAILED', 'input.hostPort'],
      [{ sourceCidrs: ['300.1.1.1/8'] }, 'VALIDATION_FAILED', 'input.sourceCidrs[0]'],
      [{ hostAddress: '203.0.113.99' }, 'VALIDATION_FAILED', 'input.hostAddress'],
      [{ targetAddress: '10.6.0.77' }, 'VALIDATION_FAILED', 'input.targetAddress'],
      [{ note: 'x'.repeat(300) }, 'VALIDATION_FAILED', 'input.note'],
      [{ portForwardId: 'nope' }, 'VALIDATION_FAILED', 'input.portForwardId'],
      [{ portForwardId: '00000000-0000-4000-8000-000000000000' }, 'NOT_FOUND', 'input.portForwardId'],
    ];
    const snapshot = await ctx.api.snapshot();
    const revision = (await host()).desiredRevision;
    for (const [input, code, field] of bad) {
      expect(await update(ctx.api.admin, { portForwardId: f.id, ...input }), JSON.stringify(input)).toMatchObject({ code, field });
    }
    expect(await ctx.api.snapshot()).toEqual(snapshot);
    expect((await host()).desiredRevision).toBe(revision);
    expect(await get(f.id)).toEqual(f);
  });

  it('answers PORT_CONFLICT for a taken host port and keeps tenants apart', async () => {
    const a = (await create(ctx.api.admin, { instanceId: vm.id, protocol: 'TCP', hostPort: '20040', targetPort: '40' })).portForward;
    await create(ctx.api.admin, { instanceId: vm.id, protocol: 'BOTH', hostPort: '20041-20042', targetPort: '41-42' });
    const taken = await update(ctx.api.admin, { portForwardId: a.id, hostPort: '20042' });
    expect(taken).toMatchObject({ __typename: 'PortConflictError', code: 'PORT_CONFLICT', field: 'input.hostPort', value: '20042' });
    // UDP on the TCP forward's own port is no conflict with itself
    expect((await update(ctx.api.admin, { portForwardId: a.id, protocol: 'UDP' })).portForward).toMatchObject({ protocol: 'UDP', hostPorts: { start: 20040 } });
    // another tenant's forward is NOT_FOUND, and their ports are "another tenant"
    expect(await update(bob.client, { portForwardId: a.id, note: 'mine' })).toMatchObject({ code: 'NOT_FOUND', field: 'input.portForwardId' });
    const hers = (await create(bob.client, { instanceId: bobVmId, protocol: 'TCP', hostPort: '20060', targetPort: '22' })).portForward;
    const conflict = await update(bob.client, { portForwardId: hers.id, hostPort: '20041' });
    expect(conflict).toMatchObject({ code: 'PORT_CONFLICT' });
    expect(conflict.message).toContain('another tenant');
    expect(conflict.message).not.toContain('vm-edit');
  });

  it("holds the owner's quota of forwarded ports, and lets an owner over a lowered quota still edit", async () => {
    const hers = (await create(bob.client, { instanceId: bobVmId, protocol: 'TCP', hostPort: '20070', targetPort: '70' })).portForward;
    // bob holds 20060 and 20070: one more port fits his quota of 3, two more do not
    expect(await update(bob.client, { portForwardId: hers.id, hostPort: '20070-20072', targetPort: '70-72' })).toMatchObject({
      code: 'QUOTA_EXCEEDED',
      field: 'input.hostPort',
    });
    expect((await update(bob.client, { portForwardId: hers.id, protocol: 'BOTH' })).portForward).toMatchObject({ protocol: 'BOTH' });
    expect(await update(bob.client, { portForwardId: hers.id, protocol: 'TCP', hostPort: '20070-20071', targetPort: '70-71' })).toMatchObject({
      __typename: 'UpdatePortForwardPayload',
    });
    await ctx.api.admin(`mutation($u: ID!) { updateUserQuotas(input: { userId: $u, quotaForwardedPorts: 1 }) { __typename } }`, { u: bob.id });
    expect((await update(bob.client, { portForwardId: hers.id, note: 'still mine' })).portForward).toMatchObject({ note: 'still mine' });
    expect(await update(bob.client, { portForwardId: hers.id, protocol: 'BOTH' })).toMatchObject({ code: 'QUOTA_EXCEEDED' });
  });

  it('gives exactly one winner when edits and creates race for one host port', async () => {
    for (let round = 0; round < 5; round++) {
      const port = String(20100 + round);
      const movers = await Promise.all(
        [0, 1, 2].map(
          async (i) =>
            (await create(ctx.api.admin, { instanceId: vm.id, protocol: 'TCP', hostPort: String(20110 + round * 3 + i), targetPort: String(100 + i) }))
              .portForward,
        ),
      );
      const outcomes = await Promise.all([
        ...movers.map((m) => update(ctx.api.admin, { portForwardId: m.id, hostPort: port })),
        create(ctx.api.admin, { instanceId: vm.id, protocol: 'TCP', hostPort: port, targetPort: '999' }),
        create(ctx.api.admin, { instanceId: vm.id, protocol: 'BOTH', hostPort: port, targetPort: '998' }),
      ]);
      const winners = outcomes.filter((o) => o.__typename === 'UpdatePortForwardPayload' || o.__typename === 'CreatePortForwardPayload');
      expect(winners, JSON.stringify(outcomes)).toHaveLength(1);
      expect(outcomes.filter((o) => o.code === 'PORT_CONFLICT')).toHaveLength(4);
      const on = await ctx.api.admin(`query($h: ID!) { portForwards(hostId: $h, first: 500) { edges { node { hostPorts { start } } } } }`, { h: hostId });
      expect(on.data!.portForwards.edges.filter((e: { node: { hostPorts: { start: number } } }) => e.node.hostPorts.start === Number(port))).toHaveLength(1);
    }
  });
});
