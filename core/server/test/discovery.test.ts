/**
 * Discovery feeds the controller, through the API an agent uses (reportHostStatus with
 * discoveredInstances), on PGlite and PostgreSQL: new backend instances are registered with their
 * addresses (or one from the host's default pool), a hand-registered one is bound by name, and one
 * that disappears from the backend is reclaimed with everything that pointed at it, audited.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { ERROR_FIELDS } from '../src/testing/api.js';
import { createPool } from '../src/testing/fixtures.js';
import { storeBackends } from '../src/testing/stores.js';
import { useStoreApi } from './support/suite.js';

const backends = await storeBackends();

const REPORT = `mutation($input: ReportHostStatusInput!) { reportHostStatus(input: $input) { __typename ${ERROR_FIELDS} } }`;
const INSTANCES = `query($h: ID!) { instances(hostId: $h) { edges { node { id name externalId owner { name } nics { name mac addresses { address } } } } } }`;

describe.each(backends)('discovery on $name', (backend) => {
  const ctx = useStoreApi(backend, 'docker-host');
  let fallbackPool: string;

  const report = async (discovered: { externalId: string; name: string; running?: boolean; nics: { name: string; mac: string; addresses: string[] }[] }[]) => {
    const r = await ctx.api.admin(REPORT, { input: { hostId: ctx.hostId, agentVersion: '0.1.0', pluginId: 'docker', discoveredInstances: discovered } });
    expect(r.errors).toBeUndefined();
    expect(r.data!.reportHostStatus.__typename).toBe('ReportHostStatusPayload');
  };
  const instances = async () =>
    (await ctx.api.admin(INSTANCES, { h: ctx.hostId })).data!.instances.edges.map((e: { node: Record<string, unknown> }) => e.node) as {
      id: string;
      name: string;
      externalId: string | null;
      owner: { name: string };
      nics: { name: string; mac: string; addresses: { address: string }[] }[];
    }[];

  beforeAll(async () => {
    await createPool(ctx.api.admin, { name: 'docker-net', kind: 'PRIVATE', network: 'ghnet', cidr: '10.60.0.0/24' });
    fallbackPool = await createPool(ctx.api.admin, { name: 'fallback', kind: 'PRIVATE', network: 'gh-extra', cidr: '10.61.0.0/24' });
  });

  it('refuses a default pool or owner that does not exist, naming the field', async () => {
    const r = await ctx.api.admin(`mutation($i: UpdateHostInput!) { updateHost(input: $i) { __typename ${ERROR_FIELDS} } }`, {
      i: { hostId: ctx.hostId, defaultPoolId: '00000000-0000-4000-8000-000000000999' },
    });
    expect(r.data!.updateHost).toMatchObject({ code: 'NOT_FOUND', field: 'input.defaultPoolId' });
    const ok = await ctx.api.admin(
      `mutation($i: UpdateHostInput!) { updateHost(input: $i) { ... on UpdateHostPayload { host { defaultPoolId } } ${ERROR_FIELDS} } }`,
      {
        i: { hostId: ctx.hostId, defaultPoolId: fallbackPool },
      },
    );
    expect(ok.data!.updateHost.host.defaultPoolId).toBe(fallbackPool);
  });

  it('registers new backend instances with the addresses they hold, or one from the default pool, and binds one registered by hand', async () => {
    const hand = await ctx.api.admin(
      `mutation($h: ID!) { createInstance(input: { hostId: $h, name: "web" }) { ... on CreateInstancePayload { instance { id } } } }`,
      {
        h: ctx.hostId,
      },
    );
    const handId = hand.data!.createInstance.instance.id;
    await report([
      { externalId: 'c0ffee01', name: 'db', running: true, nics: [{ name: 'eth0', mac: '02:42:0a:3c:00:05', addresses: ['10.60.0.5/24'] }] },
      { externalId: 'c0ffee02', name: 'cache', running: false, nics: [{ name: 'eth0', mac: '02:42:ac:11:00:02', addresses: ['172.17.0.2/16'] }] },
      { externalId: 'c0ffee03', name: 'web', running: true, nics: [] },
    ]);
    const all = await instances();
    const by = Object.fromEntries(all.map((i) => [i.name, i]));
    expect(by.db).toMatchObject({
      externalId: 'c0ffee01',
      owner: { name: 'admin' },
      nics: [{ name: 'eth0', mac: '02:42:0a:3c:00:05', addresses: [{ address: '10.60.0.5' }] }],
    });
    // 172.17.0.2 lies in no pool: the NIC gets the default pool's lowest free address
    expect(by.cache!.nics[0]!.addresses[0]!.address).toMatch(/^10\.61\.0\.\d+$/);
    expect(by.web).toMatchObject({ id: handId, externalId: 'c0ffee03' });
    // the same discovery again changes nothing
    await report([
      { externalId: 'c0ffee01', name: 'db', nics: [{ name: 'eth0', mac: '02:42:0a:3c:00:05', addresses: ['10.60.0.5/24'] }] },
      { externalId: 'c0ffee02', name: 'cache', nics: [{ name: 'eth0', mac: '02:42:ac:11:00:02', addresses: ['172.17.0.2/16'] }] },
      { externalId: 'c0ffee03', name: 'web', nics: [] },
    ]);
    expect(await instances()).toHaveLength(3);
  });

  it('reclaims an instance deleted on the backend with its forwards, proxies and addresses, and leaves never-discovered ones alone', async () => {
    const manual = await ctx.api.admin(
      `mutation($h: ID!) { createInstance(input: { hostId: $h, name: "bare-metal", externalId: "manual-42" }) { ... on CreateInstancePayload { instance { id } } } }`,
      { h: ctx.hostId },
    );
    if (!manual.data?.createInstance?.instance) throw new Error(JSON.stringify(manual));
    const db = (await instances()).find((i) => i.name === 'db')!;
    const forward = await ctx.api.admin(
      `mutation($i: ID!) { createPortForward(input: { instanceId: $i, protocol: TCP, hostPort: "15432", targetPort: "5432" }) { __typename ... on CreatePortForwardPayload { portForward { id } } ${ERROR_FIELDS} } }`,
      { i: db.id },
    );
    if (!forward.data?.createPortForward?.portForward) throw new Error(JSON.stringify(forward));
    const forwardId = forward.data!.createPortForward.portForward.id;
    const proxy = await ctx.api.admin(
      `mutation($i: ID!) { createWebProxy(input: { instanceId: $i, domain: "db.discovery.test", targetPort: 8080, tlsMode: NONE }) { __typename ... on CreateWebProxyPayload { webProxy { id } } ${ERROR_FIELDS} } }`,
      { i: db.id },
    );
    const proxyId = proxy.data!.createWebProxy.webProxy.id;

    // db is gone from the backend
    await report([
      { externalId: 'c0ffee02', name: 'cache', nics: [{ name: 'eth0', mac: '02:42:ac:11:00:02', addresses: ['172.17.0.2/16'] }] },
      { externalId: 'c0ffee03', name: 'web', nics: [] },
    ]);
    const names = (await instances()).map((i) => i.name).sort();
    expect(names).toEqual(['bare-metal', 'cache', 'web']);
    expect((await ctx.api.admin(`query($id: ID!) { portForward(id: $id) { id } }`, { id: forwardId })).data!.portForward).toBeNull();
    expect((await ctx.api.admin(`query($id: ID!) { webProxy(id: $id) { id } }`, { id: proxyId })).data!.webProxy).toBeNull();
    // the address is free again: a new instance on the same network gets it
    const again = await ctx.api.admin(
      `mutation($h: ID!) { createInstance(input: { hostId: $h, name: "db2", nics: [{ network: "ghnet", addresses: ["10.60.0.5"] }] }) { __typename ${ERROR_FIELDS} } }`,
      { h: ctx.hostId },
    );
    expect(again.data!.createInstance.__typename).toBe('CreateInstancePayload');
    // every removal is in the audit log, by the system, with the reason
    const audit = await ctx.api.admin(`query($id: String!) { auditLog(objectId: $id) { edges { node { action actorUserId } } } }`, { id: db.id });
    expect(audit.data!.auditLog.edges.map((e: { node: { action: string } }) => e.node.action)).toContain('instance.delete');
    const forwardAudit = await ctx.api.admin(`query($id: String!) { auditLog(objectId: $id) { edges { node { action } } } }`, { id: forwardId });
    expect(forwardAudit.data!.auditLog.edges.map((e: { node: { action: string } }) => e.node.action)).toContain('portForward.delete');
  });
});
