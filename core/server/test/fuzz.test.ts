/**
 * Generated pool and address inputs through the GraphQL API: every answer is either a payload
 * or a typed error naming a field; no unexpected error escapes, and refused input changes nothing.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore, type Store } from '../src/db/database.js';
import { ERROR_FIELDS, createTestApi, type TestApi } from '../src/testing/api.js';
import { createHost, createNics, createPool } from '../src/testing/fixtures.js';

const ipv4 = fc.oneof(fc.ipV4(), fc.constantFrom('10.0.0.0', '10.0.0.255', '10.77.0.9', '10.77.0.0', '255.255.255.255'));
const ipv6 = fc.oneof(fc.ipV6(), fc.constantFrom('fd00::', 'fd00:77::9', 'fd00:77::'));
const junk = fc.oneof(fc.string({ maxLength: 20 }), fc.constantFrom('', ' ', '10.0.0.0/', '/24', '::/', '1.2.3.4/33', '1.2.3.4/-1', 'fd00::/1e3', '٣.1.1.1'));
const address = fc.oneof(ipv4, ipv6, junk);
const cidr = fc.oneof(
  fc.tuple(ipv4, fc.integer({ min: -1, max: 34 })).map(([a, l]) => `${a}/${l}`),
  fc.tuple(ipv6, fc.integer({ min: 0, max: 130 })).map(([a, l]) => `${a}/${l}`),
  junk,
);

const poolInput = fc.record(
  {
    cidr,
    start: address,
    end: address,
    netmask: fc.oneof(ipv4, junk),
    prefixLength: fc.integer({ min: -5, max: 140 }),
    gateway: address,
    dns: fc.array(address, { maxLength: 3 }),
    delegatedPrefixLength: fc.integer({ min: -1, max: 130 }),
  },
  { requiredKeys: [] },
);

function expectTypedOrPayload(result: { __typename?: string; code?: string; field?: string } | undefined, payload: string): void {
  expect(result).toBeDefined();
  if (result!.__typename === payload) return;
  expect(result!.code).toMatch(/^(VALIDATION_FAILED|CONFLICT|NOT_FOUND|ADDRESS_IN_USE|POOL_EXHAUSTED|QUOTA_EXCEEDED)$/);
  expect(result!.field).toMatch(/^input\./);
}

describe('fuzzing pool and address inputs', () => {
  let store: Store;
  let api: TestApi;
  let nicId: string;

  beforeAll(async () => {
    store = await openStore({ kind: 'pglite' });
    api = await createTestApi(store);
    const hostId = await createHost(api.admin, 'fuzz-host');
    await createPool(api.admin, { name: 'fuzz-v4', kind: 'PRIVATE', network: 'br-fuzz', cidr: '10.77.0.0/24' });
    await createPool(api.admin, { name: 'fuzz-v6', kind: 'PRIVATE', network: 'br-fuzz', cidr: 'fd00:77::/64' });
    nicId = (await createNics(api.admin, hostId, undefined, 'fuzz-vm', 'br-fuzz', 1))[0]!;
  });
  afterAll(async () => store?.close());

  it('createIpPool answers every generated input with a pool or a typed error', async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(poolInput, async (input) => {
        const before = await api.snapshot();
        const r = await api.admin(`mutation($input: CreateIpPoolInput!) { createIpPool(input: $input) { __typename ${ERROR_FIELDS} } }`, {
          input: { name: `fz-${n++}`, kind: 'PRIVATE', network: `br-fz-${n}`, ...input },
        });
        expect(r.errors).toBeUndefined();
        expectTypedOrPayload(r.data?.createIpPool, 'CreateIpPoolPayload');
        if (r.data!.createIpPool.__typename !== 'CreateIpPoolPayload') expect(await api.snapshot()).toEqual(before);
      }),
      { numRuns: 150 },
    );
  });

  it('assignAddress answers every generated address with an address or a typed error', async () => {
    await fc.assert(
      fc.asyncProperty(address, async (addr) => {
        const before = await api.snapshot();
        const r = await api.admin(`mutation($input: AssignAddressInput!) { assignAddress(input: $input) { __typename ${ERROR_FIELDS} } }`, {
          input: { nicId, address: addr },
        });
        expect(r.errors).toBeUndefined();
        expectTypedOrPayload(r.data?.assignAddress, 'AssignAddressPayload');
        if (r.data!.assignAddress.__typename !== 'AssignAddressPayload') expect(await api.snapshot()).toEqual(before);
      }),
      { numRuns: 150 },
    );
  });
});
