/**
 * Two controller processes on one PostgreSQL database: allocation stays exact across replicas
 * because the database decides (row locks + unique constraint), not either process; events,
 * agent presence and token revocation reach every replica.
 */
import { createClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { openStore } from '@gatehouse/server';
import {
  ALLOCATE,
  REQUIRE_SYSTEM,
  createHost,
  createNics,
  createPool,
  createTestApi,
  createTestDatabase,
  post,
  postgresReachable,
  type TestDatabase,
} from '@gatehouse/server/testing';
import { spawnController, type ControllerProcess } from './support/processes.js';

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
    // short agent presence periods, so a dead replica's agent goes offline in seconds
    replicas = await Promise.all(
      [0, 1].map(() => spawnController(['--database-url', database.url, '--agent-heartbeat-ms', '250', '--agent-offline-after-ms', '2000'])),
    );
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

  async function agentOn(replica: ControllerProcess, token: string) {
    const client = createClient({
      url: replica.url.replace('http://', 'ws://'),
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      connectionParams: { Authorization: `Bearer ${token}` },
    });
    const closed = new Promise<number>((resolve) => client.on('closed', (event) => resolve((event as { code: number }).code)));
    const revisions: number[] = [];
    client.subscribe<{ hostDesiredState: { revision: number } }>(
      { query: 'subscription($h: ID!) { hostDesiredState(hostId: $h) { revision } }', variables: { h: hostId } },
      { next: (m) => m.data && revisions.push(m.data.hostDesiredState.revision), error: () => {}, complete: () => {} },
    );
    return { client, closed, revisions };
  }

  async function newAgentToken(via: ControllerProcess): Promise<{ id: string; secret: string }> {
    const me = await post(via.url, secret, '{ me { id } }');
    const r = await post(
      via.url,
      secret,
      `mutation($u: ID!, $h: ID!) { createApiToken(input: { userId: $u, name: "replica-agent", scope: AGENT, hostId: $h }) { ... on CreateApiTokenPayload { created { secret token { id } } } } }`,
      { u: me.body.data.me.id, h: hostId },
    );
    const created = r.body.data.createApiToken.created;
    return { id: created.token.id, secret: created.secret };
  }

  const agentVia = async (replica: ControllerProcess) =>
    (await post(replica.url, secret, 'query($h: ID!) { host(id: $h) { agent { online connections connectedAt } } }', { h: hostId })).body.data.host.agent;

  const until = async (check: () => Promise<boolean> | boolean, what: string) => {
    for (let i = 0; i < 300 && !(await check()); i++) await new Promise((r) => setTimeout(r, 50));
    expect(await check(), what).toBe(true);
  };

  it('shows an agent connected to one replica online on the other, and revoking its token there closes its connection (4403)', async () => {
    const [a, b] = replicas as [ControllerProcess, ControllerProcess];
    const token = await newAgentToken(a);
    const agent = await agentOn(b, token.secret);
    try {
      await until(async () => (await agentVia(a))?.online === true, 'online as seen from the other replica');
      const revoked = await post(a.url, secret, `mutation($id: ID!) { revokeApiToken(input: { tokenId: $id }) { __typename } }`, { id: token.id });
      expect(revoked.body.data.revokeApiToken.__typename).toBe('RevokeApiTokenPayload');
      expect(await agent.closed).toBe(4403);
      await until(async () => (await agentVia(a)).online === false, 'offline after the revocation');
    } finally {
      await agent.client.dispose();
    }
  });

  // last: it kills replica b
  it('marks an agent offline once its replica dies and its connection ages out; it comes back through the other replica', async () => {
    const [a, b] = replicas as [ControllerProcess, ControllerProcess];
    const token = await newAgentToken(a);
    const agent = await agentOn(b, token.secret);
    let again: Awaited<ReturnType<typeof agentOn>> | undefined;
    try {
      await until(async () => (await agentVia(a))?.online === true, 'online through replica b');
      b.child.kill('SIGKILL'); // a crash: b never marks the agent disconnected
      await agent.closed;
      await until(async () => (await agentVia(a)).online === false, 'offline once the connection aged out');
      expect(await agentVia(a)).toEqual({ online: false, connections: 0, connectedAt: null });
      again = await agentOn(a, token.secret);
      await until(async () => (await agentVia(a)).online === true, 'online again through replica a');
      expect((await agentVia(a)).connections).toBe(1);
    } finally {
      await agent.client.dispose();
      await again?.client.dispose();
    }
  });
});
