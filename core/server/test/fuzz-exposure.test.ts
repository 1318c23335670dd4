/**
 * Generated input for every exposure object through the GraphQL API: each answer is the payload
 * or a typed error naming an input field; no unexpected error escapes, and a refusal changes nothing.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore, type Store } from '../src/db/database.js';
import { ERROR_FIELDS, createTestApi, type TestApi } from '../src/testing/api.js';
import { createHost, createNics, createPool } from '../src/testing/fixtures.js';

const port = fc.oneof(fc.integer({ min: -2, max: 70000 }).map(String), fc.constantFrom('', ' 22 ', '22-', '-22', '80-79', '1-65535', '0x50', '٢٢'));
const portRange = fc.oneof(
  port,
  fc.tuple(fc.integer({ min: 0, max: 66000 }), fc.integer({ min: 0, max: 66000 })).map(([a, b]) => `${a}-${b}`),
);
const address = fc.oneof(fc.ipV4(), fc.ipV6(), fc.constantFrom('10.14.0.1', '203.0.113.30', '127.0.0.1', 'localhost', ''), fc.string({ maxLength: 16 }));
const cidr = fc.oneof(
  address,
  fc.tuple(fc.ipV4(), fc.integer({ min: -1, max: 33 })).map(([a, l]) => `${a}/${l}`),
  fc.constantFrom('0.0.0.0/0', '::/0', '10.0.0.0/8'),
);
const text = fc.oneof(fc.string({ maxLength: 30 }), fc.constantFrom('ok', 'a\nb', '\u0000', 'x'.repeat(300)));

async function expectTypedOrPayload(api: TestApi, payload: string, run: () => Promise<{ data?: any; errors?: unknown }>) {
  const before = await api.snapshot();
  const r = await run();
  expect(r.errors).toBeUndefined();
  const result = Object.values(r.data ?? {})[0] as { __typename: string; code?: string; field?: string };
  if (result.__typename === payload) return;
  expect(result.code).toMatch(/^(VALIDATION_FAILED|CONFLICT|NOT_FOUND|PORT_CONFLICT|QUOTA_EXCEEDED|ADDRESS_IN_USE)$/);
  expect(result.field).toMatch(/^input\./);
  expect(await api.snapshot()).toEqual(before);
}

describe('fuzzing exposure inputs', () => {
  let store: Store;
  let api: TestApi;
  let instanceId: string;
  let hostId: string;

  beforeAll(async () => {
    store = await openStore({ kind: 'pglite' });
    api = await createTestApi(store);
    hostId = await createHost(api.admin, 'fuzz-gw');
    await api.admin(`mutation($h: ID!) { updateHost(input: { hostId: $h, publicAddresses: ["203.0.113.30"] }) { __typename } }`, { h: hostId });
    await createPool(api.admin, { name: 'fz', kind: 'PRIVATE', network: 'br-fz', cidr: '10.14.0.0/24' });
    await createNics(api.admin, hostId, undefined, 'fuzz-vm', 'br-fz', 1);
    instanceId = (await api.admin(`{ instances { edges { node { id } } } }`)).data!.instances.edges[0].node.id;
  });
  afterAll(async () => store?.close());

  it('createPortForward', async () => {
    const input = fc.record(
      {
        protocol: fc.constantFrom('TCP', 'UDP', 'BOTH'),
        hostPort: portRange,
        targetPort: portRange,
        targetAddress: address,
        hostAddress: address,
        sourceCidrs: fc.array(cidr, { maxLength: 3 }),
        note: text,
      },
      { requiredKeys: ['protocol', 'targetPort'] },
    );
    await fc.assert(
      fc.asyncProperty(input, (i) =>
        expectTypedOrPayload(api, 'CreatePortForwardPayload', () =>
          api.admin(`mutation($input: CreatePortForwardInput!) { createPortForward(input: $input) { __typename ${ERROR_FIELDS} } }`, {
            input: { instanceId, ...i },
          }),
        ),
      ),
      { numRuns: 120 },
    );
  });

  it('addFirewallRule', async () => {
    const input = fc.record(
      {
        direction: fc.constantFrom('INBOUND', 'OUTBOUND'),
        protocol: fc.constantFrom('TCP', 'UDP', 'ICMP', 'ALL'),
        sourceCidr: cidr,
        destinationCidr: cidr,
        ports: fc.oneof(
          fc.array(portRange, { maxLength: 4 }).map((p) => p.join(',')),
          text,
        ),
        action: fc.constantFrom('ALLOW', 'REJECT', 'DROP'),
        priority: fc.integer({ min: -5, max: 10010 }),
        note: text,
      },
      { requiredKeys: ['direction', 'protocol', 'action'] },
    );
    await fc.assert(
      fc.asyncProperty(input, (i) =>
        expectTypedOrPayload(api, 'AddFirewallRulePayload', () =>
          api.admin(`mutation($input: AddFirewallRuleInput!) { addFirewallRule(input: $input) { __typename ${ERROR_FIELDS} } }`, {
            input: { instanceId, ...i },
          }),
        ),
      ),
      { numRuns: 120 },
    );
  });

  it('setBandwidthLimit', async () => {
    const mbps = fc.oneof(fc.double({ min: -10, max: 200_000, noNaN: true }), fc.constantFrom(0, 0.001, 1, 100_000));
    const input = fc.record(
      {
        ingressMbps: mbps,
        egressMbps: mbps,
        ingressBurstKb: fc.integer({ min: -1, max: 2_000_000 }),
        egressBurstKb: fc.integer({ min: -1, max: 2_000_000 }),
        monthlyQuotaGb: mbps,
        quotaAction: fc.constantFrom('THROTTLE', 'NOTIFY'),
        throttleMbps: mbps,
      },
      { requiredKeys: [] },
    );
    await fc.assert(
      fc.asyncProperty(input, (i) =>
        expectTypedOrPayload(api, 'SetBandwidthLimitPayload', () =>
          api.admin(`mutation($input: SetBandwidthLimitInput!) { setBandwidthLimit(input: $input) { __typename ${ERROR_FIELDS} } }`, {
            input: { instanceId, ...i },
          }),
        ),
      ),
      { numRuns: 120 },
    );
  });

  it('createWebProxy', async () => {
    const domain = fc.oneof(
      fc.domain(),
      fc.domain().map((d) => `*.${d}`),
      fc.string({ maxLength: 30 }),
      fc.constantFrom('ÄÖÜ.example', 'a..b', '*.*.x.com', 'x.com.', '.x.com'),
    );
    const input = fc.record(
      {
        domain,
        targetPort: fc.integer({ min: -1, max: 70000 }),
        targetAddress: address,
        tlsMode: fc.constantFrom('NONE', 'SELF_SIGNED', 'ACME', 'UPLOADED'),
        certificatePem: text,
      },
      { requiredKeys: ['domain', 'targetPort'] },
    );
    await fc.assert(
      fc.asyncProperty(input, (i) =>
        expectTypedOrPayload(api, 'CreateWebProxyPayload', () =>
          api.admin(`mutation($input: CreateWebProxyInput!) { createWebProxy(input: $input) { __typename ${ERROR_FIELDS} } }`, { input: { instanceId, ...i } }),
        ),
      ),
      { numRuns: 120 },
    );
  });

  it('importPortForwards', async () => {
    const cell = fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom('tcp', 'udp', '10.14.0.1', '8080', '"q,uote"', '"', '\r'));
    const row = fc.array(cell, { minLength: 1, maxLength: 6 }).map((cells) => cells.join(','));
    const csv = fc
      .array(row, { maxLength: 6 })
      .map((rows) => ['\uFEFFprotocol,host_port,vm_ip,vm_port,note', ...rows].join(fc.sample(fc.constantFrom('\n', '\r\n'), 1)[0]));
    await fc.assert(
      fc.asyncProperty(csv, fc.boolean(), (text, dryRun) =>
        expectTypedOrPayload(api, 'ImportPortForwardsPayload', () =>
          api.admin(`mutation($input: ImportPortForwardsInput!) { importPortForwards(input: $input) { __typename ${ERROR_FIELDS} } }`, {
            input: { hostId, csv: text, dryRun },
          }),
        ),
      ),
      { numRuns: 120 },
    );
  });
});
