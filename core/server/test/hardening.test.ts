/**
 * The findings of probing the API as an attacker would (issue 21), each as the request that found
 * it, on PGlite and PostgreSQL: a large automatic-port import that froze the controller, a forward
 * to the controller, one forward taking a whole port range, spreadsheet formulas in the export,
 * malformed ids, NUL bytes, a wildcard over another tenant's domain, URL parts in domains, empty
 * firewall strings, a vanishing monthly quota, and unaudited agent reports.
 */
import { execFileSync } from 'node:child_process';
import { networkInterfaces } from 'node:os';
import { sql } from 'drizzle-orm';
import { beforeAll, describe, expect, it } from 'vitest';
import { rowsOf } from '../src/db/database.js';
import { UnexpectedErrorLog, describeUnexpected } from '../src/support/logger.js';
import { ERROR_FIELDS, type Client } from '../src/testing/api.js';
import { createPool } from '../src/testing/fixtures.js';
import { REQUIRE_SYSTEM, storeBackends } from '../src/testing/stores.js';
import { useStoreApi } from './support/suite.js';

const backends = await storeBackends();
const isRoot = process.getuid?.() === 0;

const IMPORT = `mutation($input: ImportPortForwardsInput!) { importPortForwards(input: $input) { __typename
  ... on ImportPortForwardsPayload { result { dryRun applied created conflicts invalid rows { row action reason column portForward { hostPorts { start end } } } } }
  ${ERROR_FIELDS} } }`;
const FORWARD = `mutation($input: CreatePortForwardInput!) { createPortForward(input: $input) { __typename ... on CreatePortForwardPayload { portForward { id hostPorts { start end } } } ${ERROR_FIELDS} } }`;
const PROXY = `mutation($input: CreateWebProxyInput!) { createWebProxy(input: $input) { __typename ... on CreateWebProxyPayload { webProxy { id domain } } ${ERROR_FIELDS} } }`;

const autoRows = (n: number, ip = '10.40.0.6') => `protocol,host_port,vm_ip,vm_port,note\n${`tcp,,${ip},80,auto\n`.repeat(n)}`;

describe.each(backends)('hardening findings on $name', (backend) => {
  const ctx = useStoreApi(backend, 'gw-harden');
  let alice: { client: Client; id: string };
  let bob: { client: Client; id: string };
  let aliceVm: string;
  let bobVm: string;

  async function instance(client: Client, name: string, ownerId: string | undefined, address: string): Promise<string> {
    const r = await ctx.api.admin(
      `mutation($h: ID!, $n: String!, $a: String!, $o: ID) { createInstance(input: { hostId: $h, name: $n, ownerId: $o, nics: [{ network: "br-h", addresses: [$a] }] }) { ... on CreateInstancePayload { instance { id } } ${ERROR_FIELDS} } }`,
      { h: ctx.hostId, n: name, a: address, o: ownerId },
    );
    const id = r.data?.createInstance?.instance?.id;
    if (!id) throw new Error(JSON.stringify(r));
    return id;
  }

  beforeAll(async () => {
    await ctx.api.admin(`mutation($h: ID!) { updateHost(input: { hostId: $h, publicAddresses: ["203.0.113.40"] }) { __typename } }`, { h: ctx.hostId });
    await createPool(ctx.api.admin, { name: 'h-pool', kind: 'PRIVATE', network: 'br-h', cidr: '10.40.0.0/24', gateway: '10.40.0.1' });
    alice = await ctx.api.tenant('alice-h', { quotaPortForwards: 2, quotaForwardedPorts: 200 });
    bob = await ctx.api.tenant('bob-h');
    aliceVm = await instance(ctx.api.admin, 'alice-vm', alice.id, '10.40.0.5');
    bobVm = await instance(ctx.api.admin, 'bob-vm', bob.id, '10.40.0.6');
  });

  describe('1. a large automatic-port import', () => {
    it('plans 50,000 automatic-port rows with distinct, lowest-first ports', async () => {
      const r = await ctx.api.admin(IMPORT, { input: { hostId: ctx.hostId, csv: autoRows(50_000), dryRun: true } });
      const result = r.data!.importPortForwards.result;
      expect(result.rows.filter((row: any) => row.action !== 'CREATE').slice(0, 3)).toEqual([]);
      expect(result).toMatchObject({ dryRun: true, applied: false, created: 50_000, conflicts: 0, invalid: 0 });
      const ports = result.rows.map((row: any) => row.portForward.hostPorts.start);
      expect(new Set(ports).size).toBe(50_000);
      expect(ports[0]).toBe(1024);
      expect(ports.at(-1)).toBe(1024 + 49_999);
    }, 60_000);

    it('answers another tenant while a large import is planned (the event loop is not held)', async () => {
      let importDone = false;
      const started = ctx.api.admin(IMPORT, { input: { hostId: ctx.hostId, csv: autoRows(50_000), dryRun: true } }).then((r) => {
        importDone = true;
        return r;
      });
      // let the request reach its planning loop, then ask
      await new Promise((resolve) => setTimeout(resolve, 150));
      const me = await bob.client('{ me { name } }');
      expect(me.data.me.name).toBe('bob-h');
      expect(importDone).toBe(false);
      expect((await started).data!.importPortForwards.result.created).toBe(50_000);
    }, 60_000);

    it('checks the quota on a dry run too: rows over it are conflicts naming the quota', async () => {
      const r = await alice.client(IMPORT, { input: { hostId: ctx.hostId, csv: autoRows(3, '10.40.0.5'), dryRun: true } });
      const rows = r.data!.importPortForwards.result.rows;
      expect(rows.map((row: any) => row.action)).toEqual(['CREATE', 'CREATE', 'CONFLICT']);
      expect(rows[2].reason).toMatch(/would exceed quotaPortForwards \(0 of 2 used/);
      const real = await alice.client(IMPORT, { input: { hostId: ctx.hostId, csv: autoRows(3, '10.40.0.5') } });
      expect(real.data!.importPortForwards).toMatchObject({ code: 'QUOTA_EXCEEDED', field: 'input.csv' });
    });
  });

  describe('2. a target that is the controller', () => {
    const own = Object.values(networkInterfaces())
      .flat()
      .find((i) => i && !i.internal && i.family === 'IPv4');

    it.skipIf(!own)("refuses a pool that would hand out one of the controller's addresses, and allows it as the reserved gateway", async () => {
      const [a, b, c] = own!.address.split('.');
      const cidr = `${a}.${b}.${c}.0/24`;
      const before = await ctx.api.snapshot();
      const r = await ctx.api.admin(`mutation($input: CreateIpPoolInput!) { createIpPool(input: $input) { __typename ${ERROR_FIELDS} } }`, {
        input: { name: 'covers-me', kind: 'PRIVATE', network: 'br-me', cidr },
      });
      expect(r.data!.createIpPool).toMatchObject({ code: 'VALIDATION_FAILED', field: 'input.cidr', message: expect.stringContaining(own!.address) });
      expect(await ctx.api.snapshot()).toEqual(before);
      const gw = await ctx.api.admin(`mutation($input: CreateIpPoolInput!) { createIpPool(input: $input) { __typename ${ERROR_FIELDS} } }`, {
        input: {
          name: 'me-gw',
          kind: 'PRIVATE',
          network: 'br-me-gw',
          start: own!.address,
          end: own!.address,
          netmask: '255.255.255.255',
          gateway: own!.address,
        },
      });
      expect(gw.data!.createIpPool.__typename).not.toBe('CreateIpPoolPayload'); // a one-address pool whose only address is reserved has none to give
    });

    it.skipIf(!isRoot && !REQUIRE_SYSTEM)('refuses a forward, a proxy and a CSV row to an instance address the controller holds', async () => {
      // an instance address that this machine then also holds (what the probe did with 192.0.2.2)
      const vm = await instance(ctx.api.admin, 'self-vm', bob.id, '10.40.0.77');
      execFileSync('ip', ['addr', 'add', '10.40.0.77/32', 'dev', 'lo']);
      try {
        const before = await ctx.api.snapshot();
        const forward = await bob.client(FORWARD, { input: { instanceId: vm, protocol: 'TCP', hostPort: '4455', targetPort: '4455' } });
        expect(forward.data!.createPortForward).toMatchObject({
          code: 'VALIDATION_FAILED',
          field: 'input.instanceId',
          message: expect.stringContaining('controller itself'),
        });
        const explicit = await bob.client(FORWARD, {
          input: { instanceId: vm, protocol: 'TCP', hostPort: '4456', targetPort: '22', targetAddress: '10.40.0.77' },
        });
        expect(explicit.data!.createPortForward).toMatchObject({ code: 'VALIDATION_FAILED', field: 'input.targetAddress' });
        const proxy = await bob.client(PROXY, { input: { instanceId: vm, domain: 'self.gh.test', targetPort: 80, tlsMode: 'NONE' } });
        expect(proxy.data!.createWebProxy).toMatchObject({ code: 'VALIDATION_FAILED', field: 'input.instanceId' });
        const csv = await bob.client(IMPORT, {
          input: { hostId: ctx.hostId, csv: 'protocol,host_port,vm_ip,vm_port\ntcp,4457,10.40.0.77,22\n', dryRun: true },
        });
        expect(csv.data!.importPortForwards.result.rows[0]).toMatchObject({
          action: 'INVALID',
          column: 'vm_ip',
          reason: expect.stringContaining('controller itself'),
        });
        expect(await ctx.api.snapshot()).toEqual(before);
      } finally {
        execFileSync('ip', ['addr', 'del', '10.40.0.77/32', 'dev', 'lo']);
      }
    });
  });

  describe('3. one forward taking a whole shared port range', () => {
    it("bounds a tenant's forward by the host's maxForwardPorts, and counts host ports per protocol in the quota", async () => {
      const before = await ctx.api.snapshot();
      const wide = await alice.client(FORWARD, { input: { instanceId: aliceVm, protocol: 'BOTH', hostPort: '50000-65535', targetPort: '50000-65535' } });
      expect(wide.data!.createPortForward).toMatchObject({
        code: 'VALIDATION_FAILED',
        field: 'input.hostPort',
        message: expect.stringContaining('at most 1000'),
      });
      // 150 ports on BOTH count 300, over alice's 200
      const both = await alice.client(FORWARD, { input: { instanceId: aliceVm, protocol: 'BOTH', hostPort: '40000-40149', targetPort: '40000-40149' } });
      expect(both.data!.createPortForward).toMatchObject({
        code: 'QUOTA_EXCEEDED',
        field: 'input.instanceId',
        message: expect.stringContaining('quotaForwardedPorts'),
      });
      expect(await ctx.api.snapshot()).toEqual(before);
      const ok = await alice.client(FORWARD, { input: { instanceId: aliceVm, protocol: 'BOTH', hostPort: '40000-40099', targetPort: '40000-40099' } });
      expect(ok.data!.createPortForward.__typename).toBe('CreatePortForwardPayload');
      const more = await alice.client(FORWARD, { input: { instanceId: aliceVm, protocol: 'TCP', hostPort: '41000', targetPort: '22' } });
      expect(more.data!.createPortForward).toMatchObject({ code: 'QUOTA_EXCEEDED', message: expect.stringContaining('200 of 200') });
      // admins are not bound by the width; the host's limit is theirs to change
      const admin = await ctx.api.admin(FORWARD, { input: { instanceId: bobVm, protocol: 'TCP', hostPort: '50000-52000', targetPort: '50000-52000' } });
      expect(admin.data!.createPortForward.__typename).toBe('CreatePortForwardPayload');
      const bad = await ctx.api.admin(`mutation($h: ID!) { updateHost(input: { hostId: $h, maxForwardPorts: 0 }) { __typename ${ERROR_FIELDS} } }`, {
        h: ctx.hostId,
      });
      expect(bad.data!.updateHost).toMatchObject({ code: 'VALIDATION_FAILED', field: 'input.maxForwardPorts' });
      await ctx.api.admin(`mutation($id: ID!) { deletePortForward(input: { portForwardId: $id }) { __typename } }`, {
        id: ok.data!.createPortForward.portForward.id,
      });
      await ctx.api.admin(`mutation($id: ID!) { deletePortForward(input: { portForwardId: $id }) { __typename } }`, {
        id: admin.data!.createPortForward.portForward.id,
      });
    });
  });

  describe('4. formulas in the CSV export', () => {
    it('escapes cells a spreadsheet would evaluate, and imports its own export back exactly', async () => {
      const notes = ["=cmd|' /C calc'!A0", '+1+1', '-2+3', '@SUM(1)', "'=already quoted", 'plain note'];
      const created: string[] = [];
      for (const [i, note] of notes.entries()) {
        const r = await ctx.api.admin(FORWARD, { input: { instanceId: bobVm, protocol: 'TCP', hostPort: String(30000 + i), targetPort: '80', note } });
        expect(r.data!.createPortForward.__typename, note).toBe('CreatePortForwardPayload');
        created.push(r.data!.createPortForward.portForward.id);
      }
      const csv: string = (await ctx.api.admin(`query($h: ID!) { exportPortForwards(hostId: $h) }`, { h: ctx.hostId })).data.exportPortForwards;
      const cells = csv.split('\r\n').filter((line) => /,3000\d,/.test(line));
      expect(cells).toHaveLength(notes.length);
      for (const line of cells) {
        const note = line.split(',').slice(4).join(',');
        expect(note.replace(/^"/, ''), line).not.toMatch(/^[=+\-@\t\r]/);
      }
      expect(csv).toContain(`'=cmd|' /C calc'!A0`);
      expect(csv).toContain(`''=already quoted`);
      // round trip: delete, import the export, same notes
      for (const id of created) await ctx.api.admin(`mutation($id: ID!) { deletePortForward(input: { portForwardId: $id }) { __typename } }`, { id });
      const reimport = await ctx.api.admin(IMPORT, { input: { hostId: ctx.hostId, csv } });
      expect(reimport.data!.importPortForwards.result.applied).toBe(true);
      const back = await ctx.api.admin(`query($h: ID!) { portForwards(hostId: $h, first: 500) { edges { node { note hostPorts { start } } } } }`, {
        h: ctx.hostId,
      });
      const byPort = new Map(back.data.portForwards.edges.map((e: any) => [e.node.hostPorts.start, e.node.note]));
      notes.forEach((note, i) => expect(byPort.get(30000 + i)).toBe(note));
    });
  });

  describe('5. malformed ids', () => {
    it.each(['instance', 'portForward', 'webProxy', 'host', 'ipPool', 'user'])('%s(id: "not-a-uuid") is VALIDATION_FAILED naming id', async (field) => {
      const r = await ctx.api.admin(`{ ${field}(id: "not-a-uuid") { id } }`);
      expect(r.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION_FAILED', field: 'id' });
    });

    it('list filters and the audit log refuse malformed ids and NUL bytes instead of failing', async () => {
      const filters = await ctx.api.admin(`{ instances(hostId: "x") { edges { node { id } } } }`);
      expect(filters.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION_FAILED', field: 'hostId' });
      const forwards = await ctx.api.admin(`{ portForwards(instanceId: "x") { edges { node { id } } } }`);
      expect(forwards.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION_FAILED', field: 'instanceId' });
      const audit = await ctx.api.admin(`query($id: String) { auditLog(objectId: $id) { edges { node { id } } } }`, { id: 'not-a-uuid' });
      expect(audit.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION_FAILED', field: 'objectId' });
      const nul = await ctx.api.admin(`query($t: String) { auditLog(objectType: $t) { edges { node { id } } } }`, { t: 'Host\u0000' });
      expect(nul.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION_FAILED', field: 'objectType' });
    });

    it('treats an upper-case UUID in a query like the lower-case one, as mutations do', async () => {
      const lower = await ctx.api.admin(`query($id: ID!) { instance(id: $id) { id name } }`, { id: aliceVm });
      const upper = await ctx.api.admin(`query($id: ID!) { instance(id: $id) { id name } }`, { id: aliceVm.toUpperCase() });
      expect(upper).toEqual(lower);
      expect(lower.data.instance.name).toBe('alice-vm');
    });

    it("logs a database failure as one short line without the query's parameters", async () => {
      const huge = 'x'.repeat(200_000);
      const err = await ctx.api.store.db.execute(sql`select ${huge}::uuid`).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeDefined();
      const line = describeUnexpected(err);
      expect(line).toMatch(/22P02/);
      expect(line).not.toContain('xxxxxxxxxx');
      expect(line.length).toBeLessThan(1500);
    });
  });

  describe('6. NUL in an agent report', () => {
    it('reportObjectStatus refuses it naming the field, like reportHostStatus', async () => {
      const r = await ctx.api.admin(`mutation($input: ReportObjectStatusInput!) { reportObjectStatus(input: $input) { __typename ${ERROR_FIELDS} } }`, {
        input: { hostId: ctx.hostId, revision: 0, objects: [{ objectType: 'PORT_FORWARD', objectId: aliceVm, status: 'FAILED', error: 'a\u0000b' }] },
      });
      expect(r.errors).toBeUndefined();
      expect(r.data!.reportObjectStatus).toMatchObject({ code: 'VALIDATION_FAILED', field: 'input.objects[0].error' });
    });
  });

  describe("7. a wildcard over another tenant's domain", () => {
    it('refuses the wildcard and the covered name either way, without naming the other tenant’s domain', async () => {
      const shop = await alice.client(PROXY, { input: { instanceId: aliceVm, domain: 'shop.harden.test', targetPort: 80, tlsMode: 'NONE' } });
      expect(shop.data!.createWebProxy.__typename).toBe('CreateWebProxyPayload');
      const before = await ctx.api.snapshot();
      const wildcard = await bob.client(PROXY, { input: { instanceId: bobVm, domain: '*.harden.test', targetPort: 80, tlsMode: 'SELF_SIGNED' } });
      expect(wildcard.data!.createWebProxy).toMatchObject({ code: 'CONFLICT', field: 'input.domain' });
      expect(wildcard.data!.createWebProxy.message).not.toContain('shop');
      const template = await bob.client(
        `mutation { createProxyDomainTemplate(input: { pattern: "*.harden.test", targetPort: 80 }) { __typename ${ERROR_FIELDS} } }`,
      );
      expect(template.data!.createProxyDomainTemplate).toMatchObject({ code: 'CONFLICT', field: 'input.pattern' });
      expect(template.data!.createProxyDomainTemplate.message).not.toContain('shop');
      expect(await ctx.api.snapshot()).toEqual(before);
      // the other way round: bob's wildcard first, then alice's name under it
      const mine = await bob.client(PROXY, { input: { instanceId: bobVm, domain: '*.bob.harden2.test', targetPort: 80, tlsMode: 'SELF_SIGNED' } });
      expect(mine.data!.createWebProxy.__typename).toBe('CreateWebProxyPayload');
      const under = await alice.client(PROXY, { input: { instanceId: aliceVm, domain: 'x.bob.harden2.test', targetPort: 80, tlsMode: 'NONE' } });
      expect(under.data!.createWebProxy).toMatchObject({ code: 'CONFLICT', field: 'input.domain' });
      expect(under.data!.createWebProxy.message).not.toContain('*.bob');
      // the same owner may nest their own names
      const own = await bob.client(PROXY, { input: { instanceId: bobVm, domain: 'api.bob.harden2.test', targetPort: 80, tlsMode: 'NONE' } });
      expect(own.data!.createWebProxy.__typename).toBe('CreateWebProxyPayload');
    });
  });

  describe('8. domains rewritten silently', () => {
    it.each(['b.example.net?x=1', 'c.example.net#frag', 'a.example.net/x', 'i.example.net/../../etc'])('refuses %j', async (domain) => {
      const before = await ctx.api.snapshot();
      const r = await bob.client(PROXY, { input: { instanceId: bobVm, domain, targetPort: 80, tlsMode: 'NONE' } });
      expect(r.data!.createWebProxy).toMatchObject({ code: 'VALIDATION_FAILED', field: 'input.domain' });
      expect(await ctx.api.snapshot()).toEqual(before);
    });
  });

  describe('9. the small decisions', () => {
    it('refuses empty firewall strings; "any" is explicit', async () => {
      const RULE = `mutation($input: AddFirewallRuleInput!) { addFirewallRule(input: $input) { __typename ... on AddFirewallRulePayload { rule { sourceCidr ports { start } } } ${ERROR_FIELDS} } }`;
      const base = { instanceId: bobVm, direction: 'INBOUND', protocol: 'TCP', action: 'ALLOW' };
      expect((await bob.client(RULE, { input: { ...base, sourceCidr: '' } })).data!.addFirewallRule).toMatchObject({
        code: 'VALIDATION_FAILED',
        field: 'input.sourceCidr',
      });
      expect((await bob.client(RULE, { input: { ...base, ports: ' ' } })).data!.addFirewallRule).toMatchObject({
        code: 'VALIDATION_FAILED',
        field: 'input.ports',
      });
      const any = await bob.client(RULE, { input: { ...base, sourceCidr: 'any', ports: 'any' } });
      expect(any.data!.addFirewallRule.rule).toEqual({ sourceCidr: null, ports: [] });
    });

    it('refuses a monthly quota that rounds to nothing', async () => {
      const r = await bob.client(`mutation($input: SetBandwidthLimitInput!) { setBandwidthLimit(input: $input) { __typename ${ERROR_FIELDS} } }`, {
        input: { instanceId: bobVm, monthlyQuotaGb: 1e-300, quotaAction: 'NOTIFY' },
      });
      expect(r.data!.setBandwidthLimit).toMatchObject({ code: 'VALIDATION_FAILED', field: 'input.monthlyQuotaGb' });
    });

    it("writes one compact audit entry for an agent's status report that changed something", async () => {
      const f = await ctx.api.admin(FORWARD, { input: { instanceId: bobVm, protocol: 'TCP', hostPort: '33000', targetPort: '80' } });
      const id = f.data!.createPortForward.portForward.id;
      const revision = (await ctx.api.admin(`query($h: ID!) { host(id: $h) { desiredRevision } }`, { h: ctx.hostId })).data.host.desiredRevision;
      const REPORT = `mutation($input: ReportObjectStatusInput!) { reportObjectStatus(input: $input) { __typename } }`;
      const objects = [{ objectType: 'PORT_FORWARD', objectId: id, status: 'FAILED', error: 'nft: no such table' }];
      await ctx.api.admin(REPORT, { input: { hostId: ctx.hostId, revision, objects } });
      await ctx.api.admin(REPORT, { input: { hostId: ctx.hostId, revision, objects } }); // no change: no entry
      const entries = rowsOf<{ action: string; after: any }>(
        await ctx.api.store.db.execute(sql`select action, after from audit_log where object_id = ${ctx.hostId} and action = 'host.statusReport'`),
      );
      expect(entries).toHaveLength(1);
      expect(entries[0]!.after).toMatchObject({ revision, changed: { failed: 1 }, failed: [{ objectId: id, error: 'nft: no such table' }] });
    });
  });
});

describe('unexpected errors in the log', () => {
  it('are rate-limited, and what was dropped is counted', () => {
    const lines: string[] = [];
    let now = 0;
    const log = new UnexpectedErrorLog({ info() {}, warn() {}, error: (m) => lines.push(m) }, 3, 60_000, () => now);
    for (let i = 0; i < 10; i++) log.error('unexpected error in resolver', new Error(`boom ${i}`));
    expect(lines).toHaveLength(3);
    now = 60_001;
    log.error('unexpected error in resolver', new Error('later'));
    expect(lines).toHaveLength(4);
    expect(lines[3]).toMatch(/later.*7 similar line\(s\) suppressed/);
  });
});
