/**
 * Drives the real GraphQL API in-process (yoga's fetch, no socket) on a given store, as a
 * client would: bearer tokens, queries, typed error results.
 */
import 'reflect-metadata';
import { sql } from 'drizzle-orm';
import { rowsOf, type Store } from '../db/database.js';
import { createContainer, createGatehouseYoga } from '../server.js';
import { UserService, type QuotaInput } from '../services/user-service.js';

/** A GraphQL response. */
export interface GqlResponse<T = any> {
  data?: T;
  errors?: { message: string; extensions?: Record<string, unknown> }[];
}

/** An API client bound to one token. */
export type Client = <T = any>(query: string, variables?: Record<string, unknown>) => Promise<GqlResponse<T>>;

/** A controller on a store with an admin client, and a way to add tenant clients. */
export interface TestApi {
  store: Store;
  admin: Client;
  adminSecret: string;
  /** Creates a user with a USER token and returns its client and id. */
  tenant(name: string, quotas?: QuotaInput): Promise<{ client: Client; id: string; secret: string }>;
  clientFor(secret: string | null): Client;
  /** Row counts of every table, to prove a refused request changed nothing. */
  snapshot(): Promise<Record<string, number>>;
}

/** Builds the API on an open store. */
export async function createTestApi(store: Store, container = createContainer(store)): Promise<TestApi> {
  const yoga = createGatehouseYoga(container);
  const boot = await container.resolve(UserService).bootstrapAdmin();
  if (!boot) throw new Error('store is not empty');
  const clientFor =
    (secret: string | null): Client =>
    async (query, variables) => {
      const response = await yoga.fetch('http://gatehouse.test/graphql', {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(secret ? { authorization: `Bearer ${secret}` } : {}) },
        body: JSON.stringify({ query, variables }),
      });
      return (await response.json()) as GqlResponse;
    };
  const admin = clientFor(boot.secret);
  return {
    store,
    admin,
    adminSecret: boot.secret,
    clientFor,
    async tenant(name, quotas = {}) {
      const created = await admin(
        `mutation($input: CreateUserInput!) { createUser(input: $input) { ... on CreateUserPayload { user { id } } ... on Error { code message } } }`,
        { input: { name, ...quotas } },
      );
      const id = created.data?.createUser?.user?.id;
      if (!id) throw new Error(`createUser failed: ${JSON.stringify(created)}`);
      const token = await admin(
        `mutation($input: CreateApiTokenInput!) { createApiToken(input: $input) { ... on CreateApiTokenPayload { created { secret } } ... on Error { code message } } }`,
        { input: { userId: id, name: `${name}-token`, scope: 'USER' } },
      );
      const secret = token.data?.createApiToken?.created?.secret;
      if (!secret) throw new Error(`createApiToken failed: ${JSON.stringify(token)}`);
      return { client: clientFor(secret), id, secret };
    },
    async snapshot() {
      const tables = ['users', 'api_tokens', 'hosts', 'instances', 'nics', 'ip_pools', 'ip_allocations', 'audit_log'];
      const counts: Record<string, number> = {};
      for (const table of tables) {
        const result = await store.db.execute(sql.raw(`select count(*)::int as n from ${table}`));
        counts[table] = Number(rowsOf<{ n: number }>(result)[0]!.n);
      }
      return counts;
    },
  };
}

/** Fragment selecting the error fields of any mutation result. */
export const ERROR_FIELDS = '... on Error { __typename code message field value }';
