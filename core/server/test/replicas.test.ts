/**
 * Two controller processes on one PostgreSQL database: allocation stays exact across replicas
 * because the database decides (row locks + unique constraint), not either process.
 */
import { createClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { openStore } from '../src/db/database.js';
import { createTestApi } from './support/api.js';
import { ALLOCATE, createHost, createNics, createPool } from './support/fixtures.js';
import { post, spawnController, type ControllerProcess } from './support/processes.js';
import { REQUIRE_SYSTEM, createTestDatabase, postgresReachable, type TestDatabase } from './support/stores.js';

const available = (await postgresReachable()) || REQUIRE_SYSTEM;

describe.skipIf(!available)('two controller processes on one PostgreSQL', () => {
  let database: TestDatabase;
  let replicas: ControllerProcess[] = [];
  let secret: string;
  let nicIds: string[];
  let poolId: string;
  let hostId: string;

  beforeAll(async () => {
    database = await createTestDatabase();
    // seed through one in-process controller, then serve from two processes
    const store = await openStore({ kind: 'postgres', url: database.url });
    const api = await createTestApi(store);
    secret = api.adminSecret;
    hostId = await createHost(api.admin, 'replica-host');
    poolId = await createPool(api.admin, { name: 'shared', kind: 'PRIVATE', network: 'br-shared', cidr: '10.9.0.0/24', gateway: '10.9.0.1' });
    nicIds = await createNics(api.admin, hostId, undefined, 'vm-shared', 'br-shared', 8);
    await store.close();
    replicas = await Promise.all([0, 1].map(() => spawnController(['--database-url', database.url])));
  });

  afterAll(async () => {
    await Promise.all(replicas.map((r) => r.stop()));
    await database?.drop();
  });

  it('gives 300 requests spread over both replicas 253 distinct addresses and 47 POOL_EXHAUSTED', async () => {
    expect(replicas.map((r) => r.output())).not.toContain('First start');
    const results = await Promise.all(
      Array.from({ length: 300 }, (_, i) => post(replicas[i % 2]!.url, secret, ALLOCATE, { input: { nicId: nicIds[i % nicIds.length] } })),
    );
    expect(results.every((r) => r.status === 200)).toBe(true);
    const ok = results
      .filter((r) => r.body.data?.allocateAddress?.__typename === 'AllocateAddressPayload')
      .map((r) => r.body.data.allocateAddress.address.address);
    const exhausted = results.filter((r) => r.body.data?.allocateAddress?.code === 'POOL_EXHAUSTED');
    expect(new Set(ok).size).toBe(253);
    expect(ok).toHaveLength(253);
    expect(exhausted).toHaveLength(47);
    // both replicas served allocations
    const byReplica = [0, 1].map((k) => results.filter((r, i) => i % 2 === k && r.body.data?.allocateAddress?.address).length);
    expect(byReplica.every((n) => n > 0)).toBe(true);
    const util = await post(replicas[1]!.url, secret, `query($id: ID!) { ipPool(id: $id) { utilisation { allocated free } } }`, { id: poolId });
    expect(util.body.data.ipPool.utilisation).toEqual({ allocated: '253', free: '0' });
  });

  it('delivers events across replicas: a change made through one reaches subscribers of the other', async () => {
    const [a, b] = replicas as [ControllerProcess, ControllerProcess];
    const client = createClient({
      url: b.url.replace('http://', 'ws://'),
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      connectionParams: { Authorization: `Bearer ${secret}` },
    });
    const audit: string[] = [];
    const revisions: number[] = [];
    try {
      client.subscribe<{ auditLogAdded: { action: string } }>(
        { query: 'subscription { auditLogAdded { action } }' },
        { next: (m) => m.data && audit.push(m.data.auditLogAdded.action), error: () => {}, complete: () => {} },
      );
      client.subscribe<{ hostDesiredState: { revision: number } }>(
        { query: 'subscription($h: ID!) { hostDesiredState(hostId: $h) { revision } }', variables: { h: hostId } },
        { next: (m) => m.data && revisions.push(m.data.hostDesiredState.revision), error: () => {}, complete: () => {} },
      );
      for (let i = 0; i < 100 && revisions.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
      expect(revisions).toHaveLength(1);
      const created = await post(
        a.url,
        secret,
        'mutation($h: ID!) { createInstance(input: { hostId: $h, name: "via-a", nics: [{ network: "br-shared", allocate: [] }] }) { __typename } }',
        { h: hostId },
      );
      expect(created.body.data.createInstance.__typename).toBe('CreateInstancePayload');
      for (let i = 0; i < 100 && (revisions.length < 2 || !audit.includes('instance.create')); i++) await new Promise((r) => setTimeout(r, 50));
      expect(audit).toContain('instance.create');
      expect(revisions.at(-1)).toBeGreaterThan(revisions[0]!);
    } finally {
      await client.dispose();
    }
  });
});
