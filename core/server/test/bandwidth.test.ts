/** Bandwidth limits and traffic quotas through the API, on PGlite and PostgreSQL. */
import { beforeAll, describe, expect, it } from 'vitest';
import { ERROR_FIELDS, type Client } from '../src/testing/api.js';
import { createNics, createPool } from '../src/testing/fixtures.js';
import { storeBackends } from '../src/testing/stores.js';
import { useStoreApi } from './support/suite.js';

const backends = await storeBackends();

const LIMIT =
  'id nicId ingressBps egressBps ingressMbps egressMbps ingressBurstBytes egressBurstBytes burstAutomatic monthlyQuotaBytes quotaAction throttleMbps status';
const SET = `mutation($input: SetBandwidthLimitInput!) { setBandwidthLimit(input: $input) { __typename ... on SetBandwidthLimitPayload { limit { ${LIMIT} } } ${ERROR_FIELDS} } }`;

async function setLimit(client: Client, input: Record<string, unknown>) {
  const r = await client(SET, { input });
  if (r.errors) throw new Error(JSON.stringify(r.errors));
  return r.data!.setBandwidthLimit;
}

describe.each(backends)('bandwidth on $name', (backend) => {
  const ctx = useStoreApi(backend, 'host-bw');
  let instanceId: string;
  let nicIds: string[];

  beforeAll(async () => {
    await createPool(ctx.api.admin, { name: 'bw', kind: 'PRIVATE', network: 'br-bw', cidr: '10.9.0.0/24' });
    nicIds = await createNics(ctx.api.admin, ctx.hostId, undefined, 'vm-bw', 'br-bw', 2);
    const list = await ctx.api.admin(`{ instances { edges { node { id name } } } }`);
    instanceId = list.data!.instances.edges.find((e: { node: { name: string } }) => e.node.name === 'vm-bw').node.id;
  });

  it('stores Mbit/s as bits per second and fills in an automatic burst', async () => {
    const r = await setLimit(ctx.api.admin, { instanceId, ingressMbps: 100, egressMbps: 2.5 });
    expect(r.limit).toMatchObject({
      nicId: null,
      ingressBps: 100_000_000,
      egressBps: 2_500_000,
      ingressMbps: 100,
      egressMbps: 2.5,
      burstAutomatic: true,
      status: 'PENDING',
    });
    expect(r.limit.ingressBurstBytes).toBe(125_000); // 10 ms at 100 Mbit/s
    expect(r.limit.egressBurstBytes).toBe(15_000); // the floor
  });

  it('replaces the limit on a second call and keeps one row per target', async () => {
    const r = await setLimit(ctx.api.admin, { instanceId, egressMbps: 10, egressBurstKb: 64, monthlyQuotaGb: 500, quotaAction: 'THROTTLE', throttleMbps: 1 });
    expect(r.limit).toMatchObject({
      ingressBps: null,
      egressBps: 10_000_000,
      egressBurstBytes: 64_000,
      burstAutomatic: false,
      monthlyQuotaBytes: 500e9,
      quotaAction: 'THROTTLE',
      throttleMbps: 1,
    });
    const nic = await setLimit(ctx.api.admin, { instanceId, nicId: nicIds[1], ingressMbps: 20 });
    expect(nic.limit.nicId).toBe(nicIds[1]);
    const listed = await ctx.api.admin(`query($id: ID!) { instance(id: $id) { bandwidth { nicId egressMbps ingressMbps } } }`, { id: instanceId });
    expect(listed.data!.instance.bandwidth).toEqual([
      { nicId: null, egressMbps: 10, ingressMbps: null },
      { nicId: nicIds[1], egressMbps: null, ingressMbps: 20 },
    ]);
  });

  describe('bad input gets a typed error naming the field and changes nothing', () => {
    const cases: [string, Record<string, unknown>, string][] = [
      ['a zero rate', { ingressMbps: 0 }, 'input.ingressMbps'],
      ['a negative rate', { egressMbps: -5 }, 'input.egressMbps'],
      ['a rate over 100 Gbit/s', { egressMbps: 100_001 }, 'input.egressMbps'],
      ['a burst without a rate', { ingressBurstKb: 64, egressMbps: 5 }, 'input.ingressBurstKb'],
      ['a burst of 1 KB', { egressMbps: 5, egressBurstKb: 1 }, 'input.egressBurstKb'],
      ['a quota without an action', { monthlyQuotaGb: 10 }, 'input.quotaAction'],
      ['throttle without a rate', { monthlyQuotaGb: 10, quotaAction: 'THROTTLE' }, 'input.throttleMbps'],
      ['a throttle rate with notify', { monthlyQuotaGb: 10, quotaAction: 'NOTIFY', throttleMbps: 1 }, 'input.throttleMbps'],
      ['nothing to limit', {}, 'input.ingressMbps'],
      ['a NIC of another instance', { nicId: '01a20169-0000-7000-8000-000000000000', ingressMbps: 5 }, 'input.nicId'],
    ];
    it.each(cases)('%s', async (_label, overrides, field) => {
      const before = await ctx.api.snapshot();
      const r = await setLimit(ctx.api.admin, { instanceId, ...overrides });
      expect(r).toMatchObject({ field });
      expect(['VALIDATION_FAILED', 'NOT_FOUND']).toContain(r.code);
      expect(await ctx.api.snapshot()).toEqual(before);
    });
  });

  it("keeps tenants out, removes limits idempotently, and removes a NIC's limit with the NIC", async () => {
    const other = await ctx.api.tenant('olga');
    expect(await setLimit(other.client, { instanceId, ingressMbps: 1 })).toMatchObject({ code: 'NOT_FOUND', field: 'input.instanceId' });
    const REMOVE = `mutation($input: RemoveBandwidthLimitInput!) { removeBandwidthLimit(input: $input) { __typename ... on RemoveBandwidthLimitPayload { limit { id } } ${ERROR_FIELDS} } }`;
    const first = await ctx.api.admin(REMOVE, { input: { instanceId } });
    expect(first.data!.removeBandwidthLimit.limit.id).toEqual(expect.any(String));
    const second = await ctx.api.admin(REMOVE, { input: { instanceId } });
    expect(second.errors).toBeUndefined();
    expect(second.data!.removeBandwidthLimit).toBeNull();
    await ctx.api.admin(`mutation($id: ID!) { removeNic(input: { nicId: $id }) { __typename } }`, { id: nicIds[1] });
    const listed = await ctx.api.admin(`query($id: ID!) { instance(id: $id) { bandwidth { id } } }`, { id: instanceId });
    expect(listed.data!.instance.bandwidth).toEqual([]);
  });
});
