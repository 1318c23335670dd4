/**
 * One public port, several targets (issue 19, item 3) through the GraphQL API on PGlite and
 * PostgreSQL: `targets` and `sourceAffinity` on create and update, the checks naming the field
 * (1-16 targets, weights 1-100, same owner, same family, listed once, the own target among them),
 * CAPABILITY_NOT_SUPPORTED for a driver without `portForwards.multiTarget`, the desired state's
 * `balance` (a stopped instance's target left out, after the agent's discovery says so, in a new
 * revision), and the CSV `targets` column (import, export, round trip, the reference format).
 */
import type { DriverCapabilities } from '@gatehouse/sdk';
import { beforeAll, describe, expect, it } from 'vitest';
import { ERROR_FIELDS, type Client } from '../src/testing/api.js';
import { createPool } from '../src/testing/fixtures.js';
import { storeBackends } from '../src/testing/stores.js';
import { useStoreApi } from './support/suite.js';

const backends = await storeBackends();

const CAPS: DriverCapabilities = {
  portForwards: {
    implementation: 'dataplane',
    protocols: ['tcp', 'udp'],
    portRanges: true,
    ipv6: true,
    sourceAllowLists: true,
    rateLimits: true,
    multiTarget: true,
  },
  firewall: null,
  shaping: null,
  nics: { max: 8, hotplug: true, staticAddressing: true },
};

const FIELDS = 'id targetAddress status changedRevision sourceAffinity targets { instanceId targetAddress weight instance { name } }';
const CREATE = `mutation($input: CreatePortForwardInput!) { createPortForward(input: $input) { __typename ... on CreatePortForwardPayload { portForward { ${FIELDS} } } ... on CapabilityNotSupportedError { capability } ${ERROR_FIELDS} } }`;
const UPDATE = `mutation($input: UpdatePortForwardInput!) { updatePortForward(input: $input) { __typename ... on UpdatePortForwardPayload { portForward { ${FIELDS} } } ${ERROR_FIELDS} } }`;
const REPORT = `mutation($input: ReportHostStatusInput!) { reportHostStatus(input: $input) { __typename ${ERROR_FIELDS} } }`;
const IMPORT = `mutation($input: ImportPortForwardsInput!) { importPortForwards(input: $input) { ... on ImportPortForwardsPayload { result { applied created unchanged invalid rows { action column reason portForward { sourceAffinity targets { targetAddress weight } } } } } ${ERROR_FIELDS} } }`;

type Vm = { id: string; v4: string; v6: string };

describe.each(backends)('forwards with several targets on $name', (backend) => {
  const ctx = useStoreApi(backend, 'host-pf-targets');
  let hostId: string;
  const vms: Vm[] = [];
  let bobVm: Vm;
  let bob: { client: Client; id: string };

  const gql = async (client: Client, query: string, input: Record<string, unknown>) => {
    const r = await client(query, { input });
    if (r.errors) throw new Error(JSON.stringify(r.errors));
    return Object.values(r.data as Record<string, any>)[0];
  };
  const report = (capabilities: DriverCapabilities, running?: boolean[]) =>
    gql(ctx.api.admin, REPORT, {
      hostId,
      agentVersion: '0.1.0',
      pluginId: 'lxd',
      driver: { id: 'lxd', version: '0.1.0', apiVersion: 1, capabilities },
      ...(running ? { discoveredInstances: vms.map((vm, i) => ({ externalId: `vm-t${i}`, name: `vm-t${i}`, running: running[i], nics: [] })) } : {}),
    });
  const revision = async () =>
    (await ctx.api.admin(`query($id: ID!) { host(id: $id) { desiredRevision } }`, { id: hostId })).data!.host.desiredRevision as number;
  const doc = async (id: string) => {
    const state = await ctx.api.admin(`query($h: ID!) { hostDesiredState(hostId: $h) { document } }`, { h: hostId });
    return (state.data!.hostDesiredState.document as { instances: { portForwards: Record<string, any>[] }[] }).instances
      .flatMap((i) => i.portForwards)
      .find((p) => p.id === id)!;
  };
  const makeVm = async (name: string, ownerId?: string): Promise<Vm> => {
    const created = await ctx.api.admin(
      `mutation($input: CreateInstanceInput!) { createInstance(input: $input) { ... on CreateInstancePayload { instance { id nics { addresses { address } } } } } }`,
      { input: { hostId, name, externalId: name, ...(ownerId ? { ownerId } : {}), nics: [{ network: 'br-targets', allocate: ['IPV4', 'IPV6'] }] } },
    );
    const instance = created.data!.createInstance.instance;
    const addresses = instance.nics[0].addresses.map((a: { address: string }) => a.address) as string[];
    return { id: instance.id, v4: addresses.find((a) => !a.includes(':'))!, v6: addresses.find((a) => a.includes(':'))! };
  };

  beforeAll(async () => {
    const h = await ctx.api.admin(
      `mutation { createHost(input: { name: "h-targets", backend: "lxd", portRangeStart: 21000, portRangeEnd: 21200, publicAddresses: ["203.0.113.40", "2001:db8:40::1"] }) { ... on CreateHostPayload { host { id } } } }`,
    );
    hostId = h.data!.createHost.host.id;
    await createPool(ctx.api.admin, { name: 'targets-v4', kind: 'PRIVATE', network: 'br-targets', cidr: '10.40.0.0/24' });
    await createPool(ctx.api.admin, { name: 'targets-v6', kind: 'PRIVATE', network: 'br-targets', cidr: 'fd00:40::/64' });
    for (let i = 0; i < 3; i++) vms.push(await makeVm(`vm-t${i}`));
    bob = await ctx.api.tenant('bob-targets');
    bobVm = await makeVm('bob-t', bob.id);
    expect((await report(CAPS)).__typename).toBe('ReportHostStatusPayload');
  });

  it('creates a forward balanced over three instances with weights; the desired state carries the balance', async () => {
    const r = await gql(ctx.api.admin, CREATE, {
      instanceId: vms[0]!.id,
      protocol: 'TCP',
      hostPort: '21080',
      targetPort: '80',
      targets: [{ instanceId: vms[0]!.id }, { instanceId: vms[1]!.id, weight: 2 }, { instanceId: vms[2]!.id, targetAddress: vms[2]!.v4, weight: 3 }],
    });
    expect(r.__typename).toBe('CreatePortForwardPayload');
    const f = r.portForward;
    expect(f.sourceAffinity).toBe(false);
    expect(f.targets).toEqual([
      { instanceId: vms[0]!.id, targetAddress: vms[0]!.v4, weight: 1, instance: { name: 'vm-t0' } },
      { instanceId: vms[1]!.id, targetAddress: vms[1]!.v4, weight: 2, instance: { name: 'vm-t1' } },
      { instanceId: vms[2]!.id, targetAddress: vms[2]!.v4, weight: 3, instance: { name: 'vm-t2' } },
    ]);
    expect((await doc(f.id)).balance).toEqual({
      sourceAffinity: false,
      targets: vms.map((vm, i) => ({ instanceId: vm.id, address: vm.v4, weight: i + 1 })),
    });
    // a forward with one target lists it, and its document has no balance
    const single = await gql(ctx.api.admin, CREATE, { instanceId: vms[0]!.id, protocol: 'TCP', hostPort: '21081', targetPort: '81' });
    expect(single.portForward.targets).toEqual([{ instanceId: vms[0]!.id, targetAddress: vms[0]!.v4, weight: 1, instance: { name: 'vm-t0' } }]);
    expect(await doc(single.portForward.id)).not.toHaveProperty('balance');
  });

  it('refuses bad target lists with a typed error naming the field, and changes nothing', async () => {
    const base = { instanceId: vms[0]!.id, protocol: 'TCP', hostPort: '21090', targetPort: '90' };
    const own = { instanceId: vms[0]!.id };
    const before = await revision();
    const cases: [Record<string, unknown>, string, string][] = [
      [{ targets: [] }, 'VALIDATION_FAILED', 'input.targets'],
      [{ targets: Array.from({ length: 17 }, () => own) }, 'VALIDATION_FAILED', 'input.targets'],
      [{ targets: [own, { instanceId: vms[1]!.id, weight: 0 }] }, 'VALIDATION_FAILED', 'input.targets[1].weight'],
      [{ targets: [own, { instanceId: vms[1]!.id, weight: 101 }] }, 'VALIDATION_FAILED', 'input.targets[1].weight'],
      [{ targets: [own, { instanceId: bobVm.id }] }, 'VALIDATION_FAILED', 'input.targets[1].instanceId'],
      [{ targets: [own, { instanceId: vms[1]!.id, targetAddress: vms[1]!.v6 }] }, 'VALIDATION_FAILED', 'input.targets[1].targetAddress'],
      [{ targets: [own, { instanceId: vms[1]!.id }, { instanceId: vms[1]!.id }] }, 'VALIDATION_FAILED', 'input.targets[2].targetAddress'],
      [{ targets: [{ instanceId: vms[1]!.id }, { instanceId: vms[2]!.id }] }, 'VALIDATION_FAILED', 'input.targets'],
      [{ targets: [own, { instanceId: vms[1]!.id, targetAddress: '10.99.0.1' }] }, 'VALIDATION_FAILED', 'input.targets[1].targetAddress'],
      [{ targets: [own], sourceAffinity: true }, 'VALIDATION_FAILED', 'input.targets'],
      [{ sourceAffinity: true }, 'VALIDATION_FAILED', 'input.sourceAffinity'],
      [{ targets: [own, { instanceId: '00000000-0000-4000-8000-000000000099' }] }, 'NOT_FOUND', 'input.targets[1].instanceId'],
    ];
    for (const [extra, code, field] of cases) {
      expect(await gql(ctx.api.admin, CREATE, { ...base, ...extra }), JSON.stringify(extra)).toMatchObject({ code, field });
    }
    // a tenant cannot name another owner's instance: it does not exist for them
    const bobs = await gql(bob.client, CREATE, {
      instanceId: bobVm.id,
      protocol: 'TCP',
      targetPort: '90',
      targets: [{ instanceId: bobVm.id }, { instanceId: vms[1]!.id }],
    });
    expect(bobs).toMatchObject({ code: 'NOT_FOUND', field: 'input.targets[1].instanceId' });
    expect(await revision()).toBe(before);
  });

  it('refuses several targets on a driver without portForwards.multiTarget, one target still works', async () => {
    const narrow = structuredClone(CAPS);
    delete narrow.portForwards!.multiTarget;
    await report(narrow);
    try {
      const r = await gql(ctx.api.admin, CREATE, {
        instanceId: vms[0]!.id,
        protocol: 'TCP',
        hostPort: '21091',
        targetPort: '91',
        targets: [{ instanceId: vms[0]!.id }, { instanceId: vms[1]!.id }],
      });
      expect(r).toMatchObject({
        __typename: 'CapabilityNotSupportedError',
        code: 'CAPABILITY_NOT_SUPPORTED',
        capability: 'portForwards.multiTarget',
        field: 'input.targets',
      });
      const one = await gql(ctx.api.admin, CREATE, {
        instanceId: vms[0]!.id,
        protocol: 'TCP',
        hostPort: '21091',
        targetPort: '91',
        targets: [{ instanceId: vms[0]!.id }],
      });
      expect(one.__typename).toBe('CreatePortForwardPayload');
      // the balanced forward accepted before (test 1, host port 21080) is FAILED now, naming the capability
      const [balanced] = (
        await ctx.api.admin(`query($h: ID!) { portForwards(hostId: $h, first: 100) { edges { node { hostPorts { start } status statusError } } } }`, {
          h: hostId,
        })
      )
        .data!.portForwards.edges.map((e: { node: any }) => e.node)
        .filter((n: { hostPorts: { start: number } }) => n.hostPorts.start === 21080);
      expect(balanced.status).toBe('FAILED');
      expect(balanced.statusError).toMatch(/^CAPABILITY_NOT_SUPPORTED: .*\(capabilities\.portForwards\.multiTarget\)$/);
    } finally {
      await report(CAPS);
    }
  });

  it('edits targets, weights and affinity in place; null goes back to the own target', async () => {
    const f = (
      await gql(ctx.api.admin, CREATE, {
        instanceId: vms[0]!.id,
        protocol: 'TCP',
        hostPort: '21100',
        targetPort: '100',
        targets: [{ instanceId: vms[0]!.id }, { instanceId: vms[1]!.id }],
      })
    ).portForward;
    const affinity = await gql(ctx.api.admin, UPDATE, { portForwardId: f.id, sourceAffinity: true });
    expect(affinity.portForward).toMatchObject({ sourceAffinity: true, status: 'PENDING' });
    expect(affinity.portForward.targets).toHaveLength(2);
    // other edits keep the targets
    expect((await gql(ctx.api.admin, UPDATE, { portForwardId: f.id, note: 'web' })).portForward.targets).toHaveLength(2);
    const three = await gql(ctx.api.admin, UPDATE, {
      portForwardId: f.id,
      targets: [
        { instanceId: vms[2]!.id, weight: 5 },
        { instanceId: vms[0]!.id, weight: 1 },
        { instanceId: vms[1]!.id, weight: 100 },
      ],
    });
    expect(three.portForward.targets.map((t: { weight: number }) => t.weight)).toEqual([5, 1, 100]);
    expect((await doc(f.id)).balance).toMatchObject({ sourceAffinity: true });
    expect(await gql(ctx.api.admin, UPDATE, { portForwardId: f.id, targets: [{ instanceId: vms[1]!.id }] })).toMatchObject({
      code: 'VALIDATION_FAILED',
      field: 'input.targets',
    });
    const back = await gql(ctx.api.admin, UPDATE, { portForwardId: f.id, targets: null, sourceAffinity: false });
    expect(back.portForward).toMatchObject({ sourceAffinity: false, targets: [{ instanceId: vms[0]!.id, weight: 1 }] });
    expect(await doc(f.id)).not.toHaveProperty('balance');
  });

  it("leaves a stopped instance's target out of the desired state in a new revision, and takes it back when it runs", async () => {
    const f = (
      await gql(ctx.api.admin, CREATE, {
        instanceId: vms[0]!.id,
        protocol: 'TCP',
        hostPort: '21110',
        targetPort: '110',
        targets: vms.map((vm) => ({ instanceId: vm.id })),
      })
    ).portForward;
    await report(CAPS, [true, true, true]);
    const running = await revision();
    await report(CAPS, [true, true, false]);
    expect(await revision()).toBe(running + 1);
    expect((await doc(f.id)).balance.targets.map((t: { address: string }) => t.address)).toEqual([vms[0]!.v4, vms[1]!.v4]);
    const pending = (await ctx.api.admin(`query($id: ID!) { portForward(id: $id) { status changedRevision } }`, { id: f.id })).data!.portForward;
    expect(pending).toEqual({ status: 'PENDING', changedRevision: running + 1 });
    // the same discovery again changes nothing
    await report(CAPS, [true, true, false]);
    expect(await revision()).toBe(running + 1);
    // the forward's own instance stopped too: one target left, no balance, traffic to the one running
    await report(CAPS, [false, true, false]);
    expect(await doc(f.id)).toMatchObject({ targetAddress: vms[1]!.v4 });
    expect(await doc(f.id)).not.toHaveProperty('balance');
    await report(CAPS, [true, true, true]);
    expect((await doc(f.id)).balance.targets).toHaveLength(3);
    expect(await doc(f.id)).toMatchObject({ targetAddress: vms[0]!.v4 });
  });

  it('imports and exports the targets column; an export imports as UNCHANGED; the reference format still imports', async () => {
    const run = async (csv: string, dryRun = false) => (await gql(ctx.api.admin, IMPORT, { hostId, csv, dryRun })).result;
    const [a, b, c] = vms.map((vm) => vm.v4);
    const bad = await run(
      [
        'protocol,host_port,vm_ip,vm_port,targets',
        `tcp,21150,${a},150,${a} ${b}*0`,
        `tcp,21151,${a},151,${b} ${c}`,
        `tcp,21152,${a},152,${a} 10.99.0.1`,
        `tcp,21153,${a},153,${a}*2*3`,
        `tcp,21154,${a},154,${a} ${bobVm.v4}`,
      ].join('\n'),
      true,
    );
    expect(bad.rows.map((r: { action: string; column: string }) => [r.action, r.column])).toEqual(Array.from({ length: 5 }, () => ['INVALID', 'targets']));
    const ok = await run(`protocol,host_port,vm_ip,vm_port,note,targets\ntcp,21160,${a},160,lb,${a}*2 ${b} ${c}*3 affinity\ntcp,21161,${a},161,one,\n`);
    expect(ok.applied).toBe(true);
    expect(ok.rows.map((r: any) => r.portForward)).toEqual([
      {
        sourceAffinity: true,
        targets: [
          { targetAddress: a, weight: 2 },
          { targetAddress: b, weight: 1 },
          { targetAddress: c, weight: 3 },
        ],
      },
      { sourceAffinity: false, targets: [{ targetAddress: a, weight: 1 }] },
    ]);
    expect((await run(`protocol,host_port,vm_ip,vm_port,note\ntcp,21162,${a},162,plain\n`)).rows[0]).toMatchObject({ action: 'CREATE' });
    const csv = (await ctx.api.admin(`query($h: ID!) { exportPortForwards(hostId: $h) }`, { h: hostId })).data!.exportPortForwards as string;
    expect(csv.split('\r\n')[0]).toBe('protocol,host_port,vm_ip,vm_port,note,host_address,source_cidrs,rate_limit,targets');
    expect(csv).toContain(`tcp,21160,${a},160,lb,,,,${a}*2 ${b}*1 ${c}*3 affinity\r\n`);
    expect(csv).toContain(`tcp,21162,${a},162,plain,,,,\r\n`);
    const again = await run(csv, true);
    expect(again).toMatchObject({ created: 0, invalid: 0 });
    expect(
      again.rows.filter((r: { action: string }) => r.action !== 'UNCHANGED'),
      csv,
    ).toEqual([]);
  });

  it("drops a deleted instance's target: the document leaves it out, and an edit keeps the others", async () => {
    const extra = await makeVm('vm-gone');
    const f = (
      await gql(ctx.api.admin, CREATE, {
        instanceId: vms[0]!.id,
        protocol: 'TCP',
        hostPort: '21190',
        targetPort: '190',
        targets: [{ instanceId: vms[0]!.id }, { instanceId: vms[1]!.id }, { instanceId: extra.id }],
      })
    ).portForward;
    const gone = await ctx.api.admin(`mutation($id: ID!) { deleteInstance(input: { instanceId: $id }) { __typename ${ERROR_FIELDS} } }`, { id: extra.id });
    expect(gone.data!.deleteInstance.__typename).toBe('DeleteInstancePayload');
    expect((await doc(f.id)).balance.targets.map((t: { address: string }) => t.address)).toEqual([vms[0]!.v4, vms[1]!.v4]);
    // the API lists the remaining targets at once (no target with instance: null), the change audited
    const listed = async () => (await ctx.api.admin(`query($id: ID!) { portForward(id: $id) { ${FIELDS} } }`, { id: f.id })).data!.portForward;
    expect((await listed()).targets).toEqual([
      { instanceId: vms[0]!.id, targetAddress: vms[0]!.v4, weight: 1, instance: { name: 'vm-t0' } },
      { instanceId: vms[1]!.id, targetAddress: vms[1]!.v4, weight: 1, instance: { name: 'vm-t1' } },
    ]);
    const audit = await ctx.api.admin(`query($id: String!) { auditLog(objectId: $id) { edges { node { action } } } }`, { id: f.id });
    expect(audit.data!.auditLog.edges.map((e: { node: { action: string } }) => e.node.action)).toContain('portForward.update');
    const edited = await gql(ctx.api.admin, UPDATE, { portForwardId: f.id, note: 'after' });
    expect(edited.portForward.targets.map((t: { targetAddress: string }) => t.targetAddress)).toEqual([vms[0]!.v4, vms[1]!.v4]);
  });

  it('makes a forward whose other targets were all deleted a plain forward again (its own target alone)', async () => {
    const extra = await makeVm('vm-gone-2');
    const f = (
      await gql(ctx.api.admin, CREATE, {
        instanceId: vms[0]!.id,
        protocol: 'TCP',
        hostPort: '21191',
        targetPort: '191',
        targets: [{ instanceId: vms[0]!.id, weight: 2 }, { instanceId: extra.id }],
        sourceAffinity: true,
      })
    ).portForward;
    expect(f.targets).toHaveLength(2);
    const gone = await ctx.api.admin(`mutation($id: ID!) { deleteInstance(input: { instanceId: $id }) { __typename ${ERROR_FIELDS} } }`, { id: extra.id });
    expect(gone.data!.deleteInstance.__typename).toBe('DeleteInstancePayload');
    const after = (await ctx.api.admin(`query($id: ID!) { portForward(id: $id) { ${FIELDS} } }`, { id: f.id })).data!.portForward;
    expect(after).toMatchObject({
      sourceAffinity: false,
      status: 'PENDING',
      targets: [{ instanceId: vms[0]!.id, targetAddress: vms[0]!.v4, weight: 1, instance: { name: 'vm-t0' } }],
    });
    expect(after.changedRevision).toBeGreaterThan(f.changedRevision);
    expect((await doc(f.id)).balance).toBeUndefined();
  });
});
