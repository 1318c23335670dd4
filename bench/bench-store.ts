/**
 * A bench's controller: its GraphQL API over HTTP (`benchGql`), and its store: PGlite in a directory of the bench's, or a fresh PostgreSQL
 * database named `<prefix>_<pid>` on DATABASE_URL's server (default 127.0.0.1:5432), which
 * `dropBenchDatabase` removes again (also with sessions still open).
 */
import postgres from 'postgres';

/** The PostgreSQL server the benches create their databases on. */
export const BENCH_PG_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/** What `startController` takes as its store, and the database to drop afterwards (PostgreSQL only). */
export interface BenchStore {
  store: { kind: 'postgres'; url: string } | { kind: 'pglite'; dataDir: string };
  database?: string;
}

/** Creates the store: for PostgreSQL a new database `<prefix>_<pid>`. */
export async function createBenchStore(kind: 'postgres' | 'pglite', prefix: string, dataDir: string): Promise<BenchStore> {
  if (kind === 'pglite') return { store: { kind: 'pglite', dataDir } };
  const database = `${prefix}_${process.pid}`;
  const admin = postgres(BENCH_PG_URL, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`create database ${database}`);
  } finally {
    await admin.end();
  }
  const url = new URL(BENCH_PG_URL);
  url.pathname = `/${database}`;
  return { store: { kind: 'postgres', url: url.toString() }, database };
}

/** Drops a database `createBenchStore` made; succeeds when it is already gone. */
export async function dropBenchDatabase(database: string): Promise<void> {
  const admin = postgres(BENCH_PG_URL, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`drop database if exists ${database} with (force)`);
  } finally {
    await admin.end();
  }
}

/**
 * One GraphQL request to a bench's controller with a bearer token; throws on GraphQL errors and on
 * a payload that is one of the API's typed errors (it has a `code` or a `message`), naming them.
 */
export async function benchGql<T = any>(url: string, secret: string, query: string, variables?: Record<string, unknown>): Promise<T> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${secret}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await response.json()) as { data?: any; errors?: { message: string }[] };
  if (body.errors?.length) throw new Error(body.errors.map((e) => e.message).join('; '));
  const payload = Object.values(body.data as object)[0] as { message?: string; code?: string; field?: string; value?: string } | null;
  if (payload?.code) throw new Error(`${payload.code} ${payload.field}=${payload.value}: ${payload.message}`);
  if (payload?.message) throw new Error(payload.message);
  return body.data as T;
}

/** The API's typed error fields, for a mutation's payload selection. */
export const BENCH_ERR = '... on Error { code message field value }';

/** What `seedBenchHost` made. */
export interface BenchHost {
  hostId: string;
  instanceId: string;
  /** The instance's first address, drawn from the pool. */
  instanceAddress: string;
}

/**
 * The set-up the forward benches share: a private pool on `network` (`subnet`.0/24, gateway .1), a
 * Linux host with `addresses` and every port usable, and one instance `vm1` with a NIC on that network.
 */
export async function seedBenchHost(
  api: <T = any>(query: string, variables?: Record<string, unknown>) => Promise<T>,
  options: { network: string; subnet: string; addresses: readonly string[]; externalId: string },
): Promise<BenchHost> {
  const { network, subnet } = options;
  await api(
    `mutation { createIpPool(input: { name: "bench", kind: PRIVATE, network: "${network}", cidr: "${subnet}.0/24", gateway: "${subnet}.1" }) { __typename ${BENCH_ERR} } }`,
  );
  const hostId = (
    await api(
      `mutation ($addresses: [String!]!) { createHost(input: { name: "bench", backend: LINUX, publicAddresses: $addresses, portRangeStart: 1, portRangeEnd: 65535 }) { ... on CreateHostPayload { host { id } } ${BENCH_ERR} } }`,
      { addresses: options.addresses },
    )
  ).createHost.host.id as string;
  const instance = (
    await api(
      `mutation ($hostId: ID!, $name: String!) { createInstance(input: { hostId: $hostId, name: "vm1", externalId: $name, nics: [{ network: "${network}" }] }) { ... on CreateInstancePayload { instance { id nics { addresses { address } } } } ${BENCH_ERR} } }`,
      { hostId, name: options.externalId },
    )
  ).createInstance.instance as { id: string; nics: { addresses: { address: string }[] }[] };
  return { hostId, instanceId: instance.id, instanceAddress: instance.nics[0]!.addresses[0]!.address };
}

/** A new agent token for `hostId`; its secret. */
export async function createBenchAgentToken(api: <T = any>(query: string, variables?: Record<string, unknown>) => Promise<T>, hostId: string): Promise<string> {
  return (
    await api(
      `mutation ($hostId: ID!) { createApiToken(input: { name: "agent", scope: AGENT, hostId: $hostId }) { ... on CreateApiTokenPayload { created { secret } } ${BENCH_ERR} } }`,
      { hostId },
    )
  ).createApiToken.created.secret as string;
}
