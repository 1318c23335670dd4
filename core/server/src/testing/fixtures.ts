/** Builders for the objects most tests need, through the public API. */
import { ERROR_FIELDS, type Client } from './api.js';

/** Creates a host and returns its id. */
export async function createHost(client: Client, name: string): Promise<string> {
  const r = await client(`mutation($input: CreateHostInput!) { createHost(input: $input) { ... on CreateHostPayload { host { id } } ${ERROR_FIELDS} } }`, {
    input: { name, backend: 'LINUX' },
  });
  const id = r.data?.createHost?.host?.id;
  if (!id) throw new Error(`createHost failed: ${JSON.stringify(r)}`);
  return id;
}

/** Creates a pool and returns its id. */
export async function createPool(client: Client, input: Record<string, unknown>): Promise<string> {
  const r = await client(
    `mutation($input: CreateIpPoolInput!) { createIpPool(input: $input) { ... on CreateIpPoolPayload { pool { id } } ${ERROR_FIELDS} } }`,
    { input },
  );
  const id = r.data?.createIpPool?.pool?.id;
  if (!id) throw new Error(`createIpPool failed: ${JSON.stringify(r)}`);
  return id;
}

/** Creates an instance with `nicCount` NICs on `network` (no addresses) and returns the NIC ids. */
export async function createNics(
  client: Client,
  hostId: string,
  ownerId: string | undefined,
  name: string,
  network: string,
  nicCount: number,
): Promise<string[]> {
  const nics = Array.from({ length: nicCount }, () => ({ network, allocate: [] }));
  const r = await client(
    `mutation($input: CreateInstanceInput!) { createInstance(input: $input) { ... on CreateInstancePayload { instance { nics { id } } } ${ERROR_FIELDS} } }`,
    { input: { hostId, name, ownerId, nics } },
  );
  const created = r.data?.createInstance?.instance?.nics;
  if (!created) throw new Error(`createInstance failed: ${JSON.stringify(r)}`);
  return created.map((n: { id: string }) => n.id);
}

/** The allocateAddress mutation with its result fields. */
export const ALLOCATE = `mutation($input: AllocateAddressInput!) { allocateAddress(input: $input) { __typename ... on AllocateAddressPayload { address { id address } } ${ERROR_FIELDS} } }`;
