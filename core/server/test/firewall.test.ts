/** Per-instance firewall rules, policies and templates through the API, on PGlite and PostgreSQL. */
import { beforeAll, describe, expect, it } from 'vitest';
import { ERROR_FIELDS, type Client } from '../src/testing/api.js';
import { createPool } from '../src/testing/fixtures.js';
import { storeBackends } from '../src/testing/stores.js';
import { useStoreApi } from './support/suite.js';

const backends = await storeBackends();

const RULE = 'id direction protocol sourceCidr destinationCidr ports { start end } action priority enabled note status';
const ADD = `mutation($input: AddFirewallRuleInput!) { addFirewallRule(input: $input) { __typename ... on AddFirewallRulePayload { rule { ${RULE} } } ${ERROR_FIELDS} } }`;

async function addRule(client: Client, input: Record<string, unknown>) {
  const r = await client(ADD, { input });
  if (r.errors) throw new Error(JSON.stringify(r.errors));
  return r.data!.addFirewallRule;
}

describe.each(backends)('firewall on $name', (backend) => {
  const ctx = useStoreApi(backend, 'host-fw');
  let vmId: string;
  let eve: { client: Client; id: string };
  let eveVmId: string;

  const firewallOf = async (client: Client, id: string) =>
    (await client(`query($id: ID!) { instance(id: $id) { firewall { inboundPolicy outboundPolicy rules { ${RULE} } } } }`, { id })).data!.instance?.firewall;

  beforeAll(async () => {
    await createPool(ctx.api.admin, { name: 'fw', kind: 'PRIVATE', network: 'br-fw', cidr: '10.8.0.0/24' });
    eve = await ctx.api.tenant('eve');
    const mk = async (name: string, ownerId?: string) =>
      (
        await ctx.api.admin(
          `mutation($h: ID!, $n: String!, $o: ID) { createInstance(input: { hostId: $h, name: $n, ownerId: $o, nics: [{ network: "br-fw" }] }) { ... on CreateInstancePayload { instance { id } } } }`,
          {
            h: ctx.hostId,
            n: name,
            o: ownerId,
          },
        )
      ).data!.createInstance.instance.id as string;
    vmId = await mk('vm-fw');
    eveVmId = await mk('eve-vm', eve.id);
  });

  it('adds rules with port lists and ranges and lists them in priority order, ties by creation', async () => {
    const a = await addRule(ctx.api.admin, {
      instanceId: vmId,
      direction: 'INBOUND',
      protocol: 'TCP',
      ports: '22, 80,443,8000-9000',
      action: 'ALLOW',
      priority: 200,
      note: 'web',
    });
    expect(a.rule).toMatchObject({
      ports: [
        { start: 22, end: 22 },
        { start: 80, end: 80 },
        { start: 443, end: 443 },
        { start: 8000, end: 9000 },
      ],
      status: 'PENDING',
      enabled: true,
    });
    await addRule(ctx.api.admin, { instanceId: vmId, direction: 'INBOUND', protocol: 'ALL', sourceCidr: '198.51.100.0/24', action: 'DROP', priority: 100 });
    await addRule(ctx.api.admin, { instanceId: vmId, direction: 'INBOUND', protocol: 'ICMP', action: 'REJECT', priority: 200 });
    await addRule(ctx.api.admin, { instanceId: vmId, direction: 'OUTBOUND', protocol: 'UDP', destinationCidr: '2001:db8::/32', ports: '53', action: 'ALLOW' });
    const fw = await firewallOf(ctx.api.admin, vmId);
    expect(fw.rules.map((r: { direction: string; priority: number; protocol: string }) => `${r.direction}/${r.priority}/${r.protocol}`)).toEqual([
      'INBOUND/100/ALL',
      'INBOUND/200/TCP',
      'INBOUND/200/ICMP',
      'OUTBOUND/1000/UDP',
    ]);
    expect(fw.rules[0].sourceCidr).toBe('198.51.100.0/24');
  });

  describe('bad rules get a typed error naming the field and change nothing', () => {
    const cases: [string, Record<string, unknown>, string][] = [
      ['a CIDR with host bits set', { sourceCidr: '10.0.0.1/8' }, 'input.sourceCidr'],
      ['a malformed CIDR', { destinationCidr: '10.0.0.0/40' }, 'input.destinationCidr'],
      ['mixed families', { sourceCidr: '10.0.0.0/8', destinationCidr: '2001:db8::/32' }, 'input.destinationCidr'],
      ['port 0', { ports: '0' }, 'input.ports[0]'],
      ['a reversed range', { ports: '22,9000-8000' }, 'input.ports[1]'],
      ['overlapping ports', { ports: '80,70-90' }, 'input.ports'],
      ['ports on ICMP', { protocol: 'ICMP', ports: '22' }, 'input.ports'],
      ['priority 0', { priority: 0 }, 'input.priority'],
      ['priority 10001', { priority: 10001 }, 'input.priority'],
    ];
    it.each(cases)('%s', async (_label, overrides, field) => {
      const before = await ctx.api.snapshot();
      const r = await addRule(ctx.api.admin, { instanceId: vmId, direction: 'INBOUND', protocol: 'TCP', action: 'ALLOW', ...overrides });
      expect(r).toMatchObject({ code: 'VALIDATION_FAILED', field });
      expect(await ctx.api.snapshot()).toEqual(before);
    });
  });

  it('updates and deletes rules, and bumps the host revision each time', async () => {
    const revision = async () =>
      (await ctx.api.admin(`query($id: ID!) { host(id: $id) { desiredRevision } }`, { id: ctx.hostId })).data!.host.desiredRevision as number;
    const r = await addRule(ctx.api.admin, {
      instanceId: vmId,
      direction: 'INBOUND',
      protocol: 'TCP',
      ports: '3306',
      sourceCidr: '10.8.0.7',
      action: 'ALLOW',
      priority: 50,
    });
    expect(r.rule.sourceCidr).toBe('10.8.0.7/32');
    const r0 = await revision();
    const upd = await ctx.api.admin(
      `mutation($input: UpdateFirewallRuleInput!) { updateFirewallRule(input: $input) { __typename ... on UpdateFirewallRulePayload { rule { ${RULE} } } ${ERROR_FIELDS} } }`,
      { input: { ruleId: r.rule.id, action: 'REJECT', sourceCidr: null, enabled: false } },
    );
    expect(upd.data!.updateFirewallRule.rule).toMatchObject({
      action: 'REJECT',
      sourceCidr: null,
      enabled: false,
      ports: [{ start: 3306, end: 3306 }],
      priority: 50,
    });
    expect(await revision()).toBe(r0 + 1);
    const bad = await ctx.api.admin(`mutation($input: UpdateFirewallRuleInput!) { updateFirewallRule(input: $input) { __typename ${ERROR_FIELDS} } }`, {
      input: { ruleId: r.rule.id, protocol: 'ICMP' },
    });
    expect(bad.data!.updateFirewallRule).toMatchObject({ code: 'VALIDATION_FAILED', field: 'input.ports' });
    const del = await ctx.api.admin(`mutation($id: ID!) { deleteFirewallRule(input: { ruleId: $id }) { __typename } }`, { id: r.rule.id });
    expect(del.data!.deleteFirewallRule.__typename).toBe('DeleteFirewallRulePayload');
    expect(await revision()).toBe(r0 + 2);
  });

  it('applies built-in templates as editable rules and sets the policies', async () => {
    const templates = await eve.client(`{ firewallTemplates { id name builtIn } }`);
    expect(templates.data!.firewallTemplates.map((t: { id: string }) => t.id)).toEqual(['builtin:web', 'builtin:database', 'builtin:strict', 'builtin:open']);
    const APPLY = `mutation($input: ApplyFirewallTemplateInput!) { applyFirewallTemplate(input: $input) { __typename ... on ApplyFirewallTemplatePayload { applied { rules { ${RULE} } } } ${ERROR_FIELDS} } }`;
    const missing = await eve.client(APPLY, { input: { instanceId: eveVmId, templateId: 'builtin:database' } });
    expect(missing.data!.applyFirewallTemplate).toMatchObject({ code: 'VALIDATION_FAILED', field: 'input.databaseSource' });
    const db = await eve.client(APPLY, { input: { instanceId: eveVmId, templateId: 'builtin:database', databaseSource: '10.8.0.20' } });
    expect(db.data!.applyFirewallTemplate.applied.rules[0]).toMatchObject({ ports: [{ start: 3306, end: 3306 }], sourceCidr: '10.8.0.20/32', action: 'ALLOW' });
    const strict = await eve.client(APPLY, { input: { instanceId: eveVmId, templateId: 'builtin:strict', replace: true } });
    expect(strict.data!.applyFirewallTemplate.applied.rules).toHaveLength(1);
    const fw = await firewallOf(eve.client, eveVmId);
    expect(fw).toMatchObject({ inboundPolicy: 'DROP', outboundPolicy: 'ALLOW' });
    expect(fw.rules.map((r: { ports: { start: number }[] }) => r.ports[0]?.start)).toEqual([22]);
  });

  it("saves a user's own template and applies it to another instance", async () => {
    const saved = await eve.client(
      `mutation { saveFirewallTemplate(input: { instanceId: "${eveVmId}", name: "my strict" }) { __typename ... on SaveFirewallTemplatePayload { template { id rules { priority } inboundPolicy } } ${ERROR_FIELDS} } }`,
    );
    const template = saved.data!.saveFirewallTemplate.template;
    expect(template).toMatchObject({ inboundPolicy: 'DROP', rules: [{ priority: 100 }] });
    const dup = await eve.client(`mutation { saveFirewallTemplate(input: { instanceId: "${eveVmId}", name: "my strict" }) { __typename ${ERROR_FIELDS} } }`);
    expect(dup.data!.saveFirewallTemplate).toMatchObject({ code: 'CONFLICT', field: 'input.name' });
    // another tenant cannot use it
    const other = await ctx.api.tenant('mallory');
    expect((await other.client(`{ firewallTemplates { id } }`)).data!.firewallTemplates).toHaveLength(4);
  });

  it('keeps tenants apart', async () => {
    const before = await ctx.api.snapshot();
    expect(await addRule(eve.client, { instanceId: vmId, direction: 'INBOUND', protocol: 'TCP', action: 'DROP' })).toMatchObject({
      code: 'NOT_FOUND',
      field: 'input.instanceId',
    });
    const adminRule = (await firewallOf(ctx.api.admin, vmId)).rules[0].id;
    const del = await eve.client(`mutation($id: ID!) { deleteFirewallRule(input: { ruleId: $id }) { __typename ${ERROR_FIELDS} } }`, { id: adminRule });
    expect(del.data!.deleteFirewallRule).toMatchObject({ code: 'NOT_FOUND', field: 'input.ruleId' });
    const policy = await eve.client(`mutation($id: ID!) { setFirewallPolicy(input: { instanceId: $id, inbound: ALLOW }) { __typename ${ERROR_FIELDS} } }`, {
      id: vmId,
    });
    expect(policy.data!.setFirewallPolicy).toMatchObject({ code: 'NOT_FOUND' });
    expect(await ctx.api.snapshot()).toEqual(before);
  });

  it("removes an instance's rules with the instance", async () => {
    const del = await ctx.api.admin(`mutation($id: ID!) { deleteInstance(input: { instanceId: $id }) { __typename ${ERROR_FIELDS} } }`, { id: eveVmId });
    expect(del.data!.deleteInstance.__typename).toBe('DeleteInstancePayload');
    const audit = await ctx.api.admin(`{ auditLog(first: 50, objectType: "FirewallRule") { edges { node { action after } } } }`);
    expect(
      audit.data!.auditLog.edges.some(
        (e: { node: { action: string; after: { reason?: string } } }) => e.node.action === 'firewallRule.delete' && e.node.after?.reason?.includes(eveVmId),
      ),
    ).toBe(true);
  });
});
