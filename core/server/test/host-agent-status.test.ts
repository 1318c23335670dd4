/**
 * Host agent status, through the API on both stores: presence from the agent's real graphql-ws
 * subscription (online, offline when the socket closes or when a crashed replica's row ages out,
 * overlapping connections), the agent's own reports (validated field by field), the live feed
 * for admins, stale object status reports, and revocation closing open connections.
 */
import { sql } from 'drizzle-orm';
import type { Client as WsClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startController, type Controller, type Logger } from '../src/server.js';
import { rowsOf } from '../src/db/database.js';
import { newId } from '../src/support/ids.js';
import { ERROR_FIELDS, createTestApi, type TestApi } from '../src/testing/api.js';
import { createHost, createPool } from '../src/testing/fixtures.js';
import { post } from '../src/testing/http.js';
import { storeBackends } from '../src/testing/stores.js';
import { connectWs } from './support/ws.js';

const backends = await storeBackends();

// short presence periods so going offline takes seconds, not half a minute
const HEARTBEAT_MS = 250;
const OFFLINE_AFTER_MS = 4000; // 16 heartbeats: a loaded machine (load 15-18 once) delayed a refresh past 2 s

const AGENT_FIELDS = `hostId online connections connectedAt lastSeenAt appliedRevision appliedAt lastError agentVersion pluginId
  discoveredInstances { externalId name nics { name mac addresses } } discoveredAt lastDriftAt driftRepairs startedFrom cachedRevision`;
const HOST_AGENT = `query($h: ID!) { host(id: $h) { desiredRevision agent { ${AGENT_FIELDS} } } }`;
const REPORT_HOST = `mutation($input: ReportHostStatusInput!) { reportHostStatus(input: $input) { __typename ... on ReportHostStatusPayload { agent { ${AGENT_FIELDS} } } ${ERROR_FIELDS} } }`;
const REPORT_OBJECTS = `mutation($input: ReportObjectStatusInput!) { reportObjectStatus(input: $input) { __typename ... on ReportObjectStatusPayload { reported { changes { objectId status } stale { objectType objectId } } } ${ERROR_FIELDS} } }`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls until `check` holds (generous: other test files share the two cores). */
async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

describe.each(backends)('host agent status on $name', (backend) => {
  let controller: Controller;
  let api: TestApi;
  let cleanup: () => Promise<void>;
  let adminId: string;
  const logs: string[] = [];
  const clients: WsClient[] = [];
  const logger: Logger = { info: () => {}, warn: (m) => logs.push(m), error: (m, ...rest) => logs.push(`${m} ${rest.join(' ')}`) };

  beforeAll(async () => {
    const opened = await backend.open();
    cleanup = opened.cleanup;
    controller = await startController({
      store: opened.config,
      port: 0,
      bootstrap: false,
      logger,
      agentPresence: { heartbeatMs: HEARTBEAT_MS, offlineAfterMs: OFFLINE_AFTER_MS },
    });
    api = await createTestApi(controller.store, controller.container);
    adminId = (await api.admin('{ me { id } }')).data!.me.id;
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.dispose()));
    await controller?.close();
    await cleanup?.();
  });

  async function agentToken(hostId: string): Promise<{ secret: string; id: string; prefix: string }> {
    const r = await api.admin(
      `mutation($u: ID!, $h: ID!) { createApiToken(input: { userId: $u, name: "agent", scope: AGENT, hostId: $h }) { ... on CreateApiTokenPayload { created { secret token { id prefix } } } } }`,
      { u: adminId, h: hostId },
    );
    const created = r.data!.createApiToken.created;
    return { secret: created.secret, id: created.token.id, prefix: created.token.prefix };
  }

  function ws(secret: string): { client: WsClient; closed: Promise<{ code: number; reason: string }> } {
    const client = connectWs(controller.url, secret, clients);
    const closed = new Promise<{ code: number; reason: string }>((resolve) =>
      client.on('closed', (event) => resolve(event as { code: number; reason: string })),
    );
    return { client, closed };
  }

  /** An agent's hostDesiredState subscription over a real socket. */
  function subscribeAgent(secret: string, hostId: string) {
    const { client, closed } = ws(secret);
    const revisions: number[] = [];
    const errors: unknown[] = [];
    let completed = false;
    client.subscribe<{ hostDesiredState: { revision: number } }>(
      { query: 'subscription($h: ID!) { hostDesiredState(hostId: $h) { revision } }', variables: { h: hostId } },
      {
        next: (m) => (m.data ? revisions.push(m.data.hostDesiredState.revision) : errors.push(m.errors)),
        error: (e) => errors.push(e),
        complete: () => (completed = true),
      },
    );
    return { client, closed, revisions, errors, ended: () => completed || errors.length > 0 };
  }

  /** Admin's hostAgentStatusChanged feed. */
  function watchAgents(hostId: string | null) {
    const { client } = ws(api.adminSecret);
    const seen: { hostId: string; online: boolean; connections: number; driftRepairs: number }[] = [];
    const errors: unknown[] = [];
    client.subscribe<{ hostAgentStatusChanged: (typeof seen)[number] }>(
      { query: 'subscription($h: ID) { hostAgentStatusChanged(hostId: $h) { hostId online connections driftRepairs } }', variables: { h: hostId } },
      { next: (m) => (m.data ? seen.push(m.data.hostAgentStatusChanged) : errors.push(m.errors)), error: (e) => errors.push(e), complete: () => {} },
    );
    return { seen, errors };
  }

  /** The host's connection rows, live or not (a disconnect deletes its row). */
  const connectionRows = async (hostId: string) => {
    const rows = await controller.store.db.execute(sql`select count(*)::int as n from host_agent_connections where host_id = ${hostId}`);
    return Number(rowsOf<{ n: number }>(rows)[0]!.n);
  };
  const agentOf = async (hostId: string) => (await api.admin(HOST_AGENT, { h: hostId })).data!.host.agent;
  const revisionOf = async (hostId: string) => (await api.admin(HOST_AGENT, { h: hostId })).data!.host.desiredRevision as number;
  const report = (secret: string, input: Record<string, unknown>) =>
    api
      .clientFor(secret)(REPORT_HOST, { input })
      .then((r) => r.data!.reportHostStatus);

  it('shows the agent online while its hostDesiredState subscription is open, refreshed past the offline age, and offline once the socket closes', async () => {
    const hostId = await createHost(api.admin, 'presence-host');
    expect(await agentOf(hostId)).toEqual({
      hostId,
      online: false,
      connections: 0,
      connectedAt: null,
      lastSeenAt: null,
      appliedRevision: null,
      appliedAt: null,
      lastError: null,
      agentVersion: null,
      pluginId: null,
      discoveredInstances: [],
      discoveredAt: null,
      lastDriftAt: null,
      driftRepairs: 0,
      startedFrom: null,
      cachedRevision: null,
    });
    const feed = watchAgents(hostId);
    await sleep(300); // let the feed register

    // an admin watching the desired state is not the agent
    const byAdmin = subscribeAgent(api.adminSecret, hostId);
    await until(() => byAdmin.revisions.length > 0, "the admin's first document");
    expect((await agentOf(hostId)).online).toBe(false);

    const { secret } = await agentToken(hostId);
    const agent = subscribeAgent(secret, hostId);
    await until(() => agent.revisions.length > 0, "the agent's first document");
    await until(async () => (await agentOf(hostId)).online, 'online');
    const first = await agentOf(hostId);
    expect(first).toMatchObject({ online: true, connections: 1, connectedAt: expect.any(String), lastSeenAt: expect.any(String) });

    // heartbeats keep it online well past the offline age
    await sleep(OFFLINE_AFTER_MS + 1000);
    const later = await agentOf(hostId);
    expect(later).toMatchObject({ online: true, connections: 1, connectedAt: first.connectedAt });
    expect(Date.parse(later.lastSeenAt)).toBeGreaterThan(Date.parse(first.lastSeenAt));

    await agent.client.dispose();
    await until(async () => !(await agentOf(hostId)).online, 'offline after the socket closed');
    const gone = await agentOf(hostId);
    expect(gone).toMatchObject({ online: false, connections: 0, connectedAt: null });
    expect(Date.parse(gone.lastSeenAt)).toBeGreaterThanOrEqual(Date.parse(later.lastSeenAt));

    await until(() => feed.seen.some((s) => !s.online) && feed.seen.some((s) => s.online), 'the feed to show both');
    expect(feed.errors).toEqual([]);
    expect(feed.seen.every((s) => s.hostId === hostId)).toBe(true);
    const firstOnline = feed.seen.findIndex((s) => s.online);
    expect(feed.seen.slice(firstOnline).some((s) => !s.online)).toBe(true);
    await byAdmin.client.dispose();
  });

  it('keeps a reconnected agent online when its old connection ends after the new one opened', async () => {
    const hostId = await createHost(api.admin, 'overlap-host');
    const { secret } = await agentToken(hostId);
    const feed = watchAgents(hostId);
    await sleep(300);
    const old = subscribeAgent(secret, hostId);
    await until(async () => (await agentOf(hostId)).online, 'online with the first connection');
    const fresh = subscribeAgent(secret, hostId);
    await until(async () => (await agentOf(hostId)).connections === 2, 'two connections');
    const both = await agentOf(hostId);
    await old.client.dispose();
    // gone means its row deleted (the disconnect written): a count of live rows can dip to 1 for a
    // moment on a loaded machine when a heartbeat is late, and that is not the old connection leaving
    await until(async () => (await connectionRows(hostId)) === 1, 'the old connection gone');
    await until(
      () => feed.seen.some((s) => s.connections === 1 && feed.seen.indexOf(s) > feed.seen.findIndex((x) => x.connections === 2)),
      'the feed showing it',
    );
    // the new connection was never taken for the old one's: online throughout, since it opened
    expect(await agentOf(hostId)).toMatchObject({ online: true, connections: 1, connectedAt: both.connectedAt });
    await sleep(OFFLINE_AFTER_MS + 500);
    expect(await agentOf(hostId)).toMatchObject({ online: true, connections: 1, connectedAt: both.connectedAt });
    expect(feed.seen.filter((s) => !s.online)).toEqual([]);
    await fresh.client.dispose();
    await until(async () => !(await agentOf(hostId)).online, 'offline after the last connection');
    await until(() => feed.seen.some((s) => !s.online), 'the feed showing it offline');
  });

  it("counts a crashed replica's connection only until it ages out, tells watchers, and clears it on the next connect", async () => {
    const hostId = await createHost(api.admin, 'crash-host');
    const token = await agentToken(hostId);
    const feed = watchAgents(null);
    await sleep(300);
    // what a replica that died mid-subscription leaves: a connection row nobody refreshes or deletes
    // (seen a second ahead of now, so a busy machine cannot age it out before the first looks)
    await controller.store.db.execute(
      sql`insert into host_agent_connections (id, host_id, token_id, connected_at, last_seen_at) values (${newId()}, ${hostId}, ${token.id}, now(), now() + interval '1 second')`,
    );
    expect((await agentOf(hostId)).online).toBe(true);
    const reported = await report(token.secret, { hostId, appliedRevision: 0, agentVersion: '0.1.0', pluginId: 'linux' });
    expect(reported.agent.online).toBe(true);
    await until(() => feed.seen.some((s) => s.hostId === hostId && s.online), 'the feed showing it online');
    // nobody announces the crash: the row ages out and the feed looks again by itself
    await until(() => feed.seen.some((s) => s.hostId === hostId && !s.online), 'the feed showing it offline', OFFLINE_AFTER_MS + 15_000);
    expect(await agentOf(hostId)).toMatchObject({ online: false, connections: 0, connectedAt: null });

    const agent = subscribeAgent(token.secret, hostId);
    await until(async () => (await agentOf(hostId)).online, 'online again');
    expect(await connectionRows(hostId)).toBe(1);
    await agent.client.dispose();
    await until(async () => !(await agentOf(hostId)).online, 'offline');
  });

  it('records what the agent reports: revision, error, version, plugin, discovered instances and drift repairs', async () => {
    const hostId = await createHost(api.admin, 'report-host');
    const { secret } = await agentToken(hostId);
    await createPool(api.admin, { name: 'rep', kind: 'PRIVATE', network: 'br-rep', cidr: '10.31.0.0/24' });
    const vm = (
      await api.admin(
        `mutation($h: ID!) { createInstance(input: { hostId: $h, name: "rep-vm", nics: [{ network: "br-rep" }] }) { ... on CreateInstancePayload { instance { id } } } }`,
        { h: hostId },
      )
    ).data!.createInstance.instance.id;
    const forward = (
      await api.admin(
        `mutation($i: ID!) { createPortForward(input: { instanceId: $i, protocol: TCP, hostPort: "20022", targetPort: "22" }) { ... on CreatePortForwardPayload { portForward { id } } } }`,
        { i: vm },
      )
    ).data!.createPortForward.portForward.id;
    const revision = await revisionOf(hostId);
    const objects = await api.clientFor(secret)(REPORT_OBJECTS, {
      input: { hostId, revision, objects: [{ objectType: 'PORT_FORWARD', objectId: forward, status: 'APPLIED' }] },
    });
    expect(objects.data!.reportObjectStatus.reported.changes).toEqual([{ objectId: forward, status: 'APPLIED' }]);

    const discovered = [
      {
        externalId: 'c0ffee1234',
        name: 'web (prod)',
        nics: [
          { name: 'eth0', mac: '02:AA:BB:CC:DD:01', addresses: ['10.31.0.2/24', '2001:DB8:0:0::2/64', '10.31.0.9'] },
          { name: 'lo-like', mac: null, addresses: [] },
        ],
      },
      { externalId: 'vm-9', name: 'db', nics: [] },
    ];
    const first = await report(secret, {
      hostId,
      appliedRevision: revision,
      error: null,
      agentVersion: '0.1.0-rc.1',
      pluginId: 'linux',
      discoveredInstances: discovered,
    });
    expect(first.__typename).toBe('ReportHostStatusPayload');
    expect(first.agent).toMatchObject({
      hostId,
      appliedRevision: revision,
      appliedAt: expect.any(String),
      lastError: null,
      agentVersion: '0.1.0-rc.1',
      pluginId: 'linux',
      lastSeenAt: expect.any(String),
      discoveredAt: expect.any(String),
      lastDriftAt: null,
      driftRepairs: 0,
      discoveredInstances: [
        {
          externalId: 'c0ffee1234',
          name: 'web (prod)',
          nics: [
            { name: 'eth0', mac: '02:aa:bb:cc:dd:01', addresses: ['10.31.0.2/24', '2001:db8::2/64', '10.31.0.9'] },
            { name: 'lo-like', mac: null, addresses: [] },
          ],
        },
        { externalId: 'vm-9', name: 'db', nics: [] },
      ],
    });
    // the admin sees the same, and so does the agent token on its own host
    expect(await agentOf(hostId)).toEqual(first.agent);
    const own = await api.clientFor(secret)(HOST_AGENT, { h: hostId });
    expect(own.data!.host.agent).toEqual(first.agent);
    // the host report leaves object statuses alone
    const status = await api.admin(`query($id: ID!) { portForward(id: $id) { status } }`, { id: forward });
    expect(status.data!.portForward.status).toBe('APPLIED');

    // drift repairs count; an absent list keeps the last one; an error is shown until the next report clears it
    const feed = watchAgents(hostId);
    await sleep(300);
    await report(secret, { hostId, appliedRevision: revision, agentVersion: '0.1.0-rc.1', pluginId: 'linux', driftDetected: true });
    const failed = await report(secret, {
      hostId,
      appliedRevision: revision,
      error: 'nft: Could not process rule: No such file or directory\n  add rule inet gatehouse',
      agentVersion: '0.1.0-rc.1',
      pluginId: 'linux',
      driftDetected: true,
    });
    expect(failed.agent).toMatchObject({
      driftRepairs: 2,
      lastDriftAt: expect.any(String),
      lastError: 'nft: Could not process rule: No such file or directory\n  add rule inet gatehouse',
      discoveredInstances: first.agent.discoveredInstances,
      discoveredAt: first.agent.discoveredAt,
    });
    await until(() => feed.seen.some((s) => s.driftRepairs === 2), 'the feed showing the repairs');
    const cleared = await report(secret, { hostId, appliedRevision: revision, agentVersion: '0.2.0', pluginId: 'linux', discoveredInstances: [] });
    expect(cleared.agent).toMatchObject({ lastError: null, agentVersion: '0.2.0', driftRepairs: 2, discoveredInstances: [] });

    // a late report of an older revision changes nothing but lastSeenAt
    await api.admin(`mutation($i: ID!) { setFirewallPolicy(input: { instanceId: $i, inbound: DROP }) { __typename } }`, { i: vm });
    const newer = await revisionOf(hostId);
    await report(secret, { hostId, appliedRevision: newer, agentVersion: '0.2.0', pluginId: 'linux' });
    const late = await report(secret, { hostId, appliedRevision: revision, error: 'old failure', agentVersion: '0.1.0', pluginId: 'linux' });
    expect(late.agent).toMatchObject({ appliedRevision: newer, lastError: null, agentVersion: '0.2.0' });
    // null: nothing applied since the agent started; the stored revision stays
    const restarted = await report(secret, { hostId, appliedRevision: null, error: 'docker: connection refused', agentVersion: '0.2.0', pluginId: 'linux' });
    expect(restarted.agent).toMatchObject({ appliedRevision: newer, lastError: 'docker: connection refused', startedFrom: null, cachedRevision: null });

    // an agent restarted from its on-disk cache says so, with the cached revision, even in a late report;
    // absent: unchanged; a later run that waited for the controller replaces it
    const cached = await report(secret, {
      hostId,
      appliedRevision: revision,
      agentVersion: '0.2.0',
      pluginId: 'linux',
      startedFrom: 'CACHE',
      cachedRevision: revision,
    });
    expect(cached.agent).toMatchObject({ appliedRevision: newer, startedFrom: 'CACHE', cachedRevision: revision });
    const quiet = await report(secret, { hostId, appliedRevision: newer, agentVersion: '0.2.0', pluginId: 'linux' });
    expect(quiet.agent).toMatchObject({ startedFrom: 'CACHE', cachedRevision: revision });
    const fresh = await report(secret, {
      hostId,
      appliedRevision: newer,
      agentVersion: '0.2.0',
      pluginId: 'linux',
      startedFrom: 'CONTROLLER',
      cachedRevision: null,
    });
    expect(fresh.agent).toMatchObject({ startedFrom: 'CONTROLLER', cachedRevision: null });
  });

  it("refuses another host's agent and users, and shows the agent status to admins and the host's agent only", async () => {
    const hostId = await createHost(api.admin, 'guarded-host');
    const otherId = await createHost(api.admin, 'guarded-other');
    const other = await agentToken(otherId);
    const user = await api.tenant('agent-nosy');
    const input = { hostId, appliedRevision: 0, agentVersion: '0.1.0', pluginId: 'linux' };
    expect(await report(other.secret, input)).toMatchObject({ __typename: 'ForbiddenError', code: 'FORBIDDEN', field: 'input.hostId', value: hostId });
    expect(await report(user.secret, input)).toMatchObject({ code: 'FORBIDDEN', field: 'input.hostId' });
    // admins may report for any host
    expect((await report(api.adminSecret, input)).__typename).toBe('ReportHostStatusPayload');

    const byUser = await user.client(`query($h: ID!) { host(id: $h) { name agent { online } } }`, { h: hostId });
    expect(byUser.errors?.[0]?.extensions).toMatchObject({ code: 'FORBIDDEN' });
    expect((await user.client(`query($h: ID!) { host(id: $h) { name } }`, { h: hostId })).data!.host.name).toBe('guarded-host');
    // an agent token sees its own host only
    expect((await api.clientFor(other.secret)(`query($h: ID!) { host(id: $h) { name } }`, { h: hostId })).data!.host).toBeNull();
    expect((await api.clientFor(other.secret)(`query($h: ID!) { host(id: $h) { agent { online } } }`, { h: otherId })).data!.host.agent.online).toBe(false);

    const { client } = ws(user.secret);
    const errors: unknown[] = [];
    client.subscribe(
      { query: 'subscription { hostAgentStatusChanged { hostId } }' },
      { next: (m) => errors.push(m.errors), error: (e) => errors.push(e), complete: () => {} },
    );
    await until(() => errors.length > 0, 'an error for a user');
    expect(JSON.stringify(errors)).toContain('FORBIDDEN');
  });

  it('validates every reported field, names it, and changes nothing on bad input', async () => {
    const hostId = await createHost(api.admin, 'strict-host');
    const { secret } = await agentToken(hostId);
    const good = { hostId, appliedRevision: 0, agentVersion: '1.0.0', pluginId: 'docker' };
    await report(secret, { ...good, discoveredInstances: [{ externalId: 'keep', name: 'keep', nics: [] }] });
    const before = await agentOf(hostId);
    const nic = (over: Record<string, unknown>) => [
      { externalId: 'x1', name: 'x', nics: [{ name: 'eth0', mac: '02:00:00:00:00:01', addresses: [], ...over }] },
    ];
    const cases: [Record<string, unknown>, string, string?][] = [
      // (registering the discovered instance "keep" made revision 1)
      [{ appliedRevision: 5 }, 'input.appliedRevision', "ahead of the host's desired revision 1"],
      [{ appliedRevision: -1 }, 'input.appliedRevision'],
      [{ error: 'x'.repeat(2001) }, 'input.error', 'longer than 2000'],
      [{ error: 'bad\u0000byte' }, 'input.error'],
      [{ agentVersion: '' }, 'input.agentVersion'],
      [{ agentVersion: '1.0 beta' }, 'input.agentVersion'],
      [{ pluginId: 'docker; rm -rf /' }, 'input.pluginId'],
      [{ startedFrom: 'CACHE' }, 'input.cachedRevision', 'startedFrom is CACHE'],
      [{ startedFrom: 'CACHE', cachedRevision: -2 }, 'input.cachedRevision'],
      [{ startedFrom: 'CONTROLLER', cachedRevision: 3 }, 'input.cachedRevision', 'null when startedFrom is CONTROLLER'],
      [{ hostId: 'not-an-id' }, 'input.hostId'],
      [{ discoveredInstances: nic({ mac: '01:00:5e:00:00:01' }) }, 'input.discoveredInstances[0].nics[0].mac', 'multicast'],
      [{ discoveredInstances: nic({ mac: 'zz:00:00:00:00:01' }) }, 'input.discoveredInstances[0].nics[0].mac'],
      [{ discoveredInstances: nic({ addresses: ['10.0.0.1', '10.0.0.300'] }) }, 'input.discoveredInstances[0].nics[0].addresses[1]'],
      [{ discoveredInstances: nic({ addresses: ['10.0.0.1/33'] }) }, 'input.discoveredInstances[0].nics[0].addresses[0]', 'prefix length'],
      [{ discoveredInstances: nic({ addresses: ['fe80::1%eth0'] }) }, 'input.discoveredInstances[0].nics[0].addresses[0]'],
      [{ discoveredInstances: nic({ addresses: Array.from({ length: 65 }, (_, i) => `10.0.1.${i}`) }) }, 'input.discoveredInstances[0].nics[0].addresses'],
      [{ discoveredInstances: nic({ name: '' }) }, 'input.discoveredInstances[0].nics[0].name'],
      [{ discoveredInstances: [{ externalId: 'a', name: 'n'.repeat(256), nics: [] }] }, 'input.discoveredInstances[0].name'],
      [{ discoveredInstances: [{ externalId: 'a\nb', name: 'a', nics: [] }] }, 'input.discoveredInstances[0].externalId'],
      [
        {
          discoveredInstances: [
            { externalId: 'dup', name: 'a', nics: [] },
            { externalId: 'dup', name: 'b', nics: [] },
          ],
        },
        'input.discoveredInstances[1].externalId',
        'input.discoveredInstances[0]',
      ],
      [
        { discoveredInstances: Array.from({ length: 1001 }, (_, i) => ({ externalId: `i${i}`, name: 'n', nics: [] })) },
        'input.discoveredInstances',
        'more than 1000',
      ],
      [
        { discoveredInstances: [{ externalId: 'a', name: 'a', nics: Array.from({ length: 65 }, (_, i) => ({ name: `eth${i}`, addresses: [] })) }] },
        'input.discoveredInstances[0].nics',
      ],
    ];
    for (const [patch, field, message] of cases) {
      const r = await report(secret, { ...good, ...patch });
      expect(r, `${field}: ${JSON.stringify(patch).slice(0, 80)}`).toMatchObject({ __typename: 'ValidationError', code: 'VALIDATION_FAILED', field });
      if (message) expect(r.message).toContain(message);
    }
    expect((await report(api.adminSecret, { ...good, hostId: newId() })).code).toBe('NOT_FOUND');
    expect(await agentOf(hostId)).toEqual(before);
  });

  it('skips a status report older than the change of an object: it stays PENDING until its revision is reported', async () => {
    const hostId = await createHost(api.admin, 'stale-host');
    const { secret } = await agentToken(hostId);
    await createPool(api.admin, { name: 'stale', kind: 'PRIVATE', network: 'br-stale', cidr: '10.32.0.0/24' });
    const vm = (
      await api.admin(
        `mutation($h: ID!) { createInstance(input: { hostId: $h, name: "stale-vm", nics: [{ network: "br-stale" }] }) { ... on CreateInstancePayload { instance { id } } } }`,
        { h: hostId },
      )
    ).data!.createInstance.instance.id;
    const forward = (
      await api.admin(
        `mutation($i: ID!) { createPortForward(input: { instanceId: $i, protocol: TCP, hostPort: "20080", targetPort: "80" }) { ... on CreatePortForwardPayload { portForward { id changedRevision } } } }`,
        { i: vm },
      )
    ).data!.createPortForward.portForward;
    const rule = (
      await api.admin(
        `mutation($i: ID!) { addFirewallRule(input: { instanceId: $i, direction: INBOUND, protocol: TCP, ports: "80", action: ALLOW }) { ... on AddFirewallRulePayload { rule { id changedRevision } } } }`,
        { i: vm },
      )
    ).data!.addFirewallRule.rule;
    const limit = (
      await api.admin(
        `mutation($i: ID!) { setBandwidthLimit(input: { instanceId: $i, egressMbps: 10 }) { ... on SetBandwidthLimitPayload { limit { id changedRevision } } } }`,
        { i: vm },
      )
    ).data!.setBandwidthLimit.limit;
    const r = await revisionOf(hostId);
    expect(forward.changedRevision).toBeLessThan(rule.changedRevision);
    expect(limit.changedRevision).toBe(r);
    const all = (status: string) => [
      { objectType: 'PORT_FORWARD', objectId: forward.id, status },
      { objectType: 'FIREWALL_RULE', objectId: rule.id, status },
      { objectType: 'BANDWIDTH_LIMIT', objectId: limit.id, status },
    ];
    const send = (revision: number, objects: unknown[]) =>
      api
        .clientFor(secret)(REPORT_OBJECTS, { input: { hostId, revision, objects } })
        .then((x) => x.data!.reportObjectStatus);
    // a report for a revision before the rule and the limit existed applies to the forward only
    const early = await send(forward.changedRevision, all('APPLIED'));
    expect(early.reported.changes).toEqual([{ objectId: forward.id, status: 'APPLIED' }]);
    expect(early.reported.stale).toEqual([
      { objectType: 'FIREWALL_RULE', objectId: rule.id },
      { objectType: 'BANDWIDTH_LIMIT', objectId: limit.id },
    ]);
    expect((await send(r, all('APPLIED'))).reported.changes).toHaveLength(2);

    // change the rule and the limit after revision r, then report r: they stay PENDING
    const updated = await api.admin(
      `mutation($id: ID!) { updateFirewallRule(input: { ruleId: $id, ports: "80,443" }) { ... on UpdateFirewallRulePayload { rule { status changedRevision } } } }`,
      { id: rule.id },
    );
    expect(updated.data!.updateFirewallRule.rule).toEqual({ status: 'PENDING', changedRevision: r + 1 });
    await api.admin(`mutation($i: ID!) { setBandwidthLimit(input: { instanceId: $i, egressMbps: 20 }) { __typename } }`, { i: vm });
    const stale = await send(r, all('APPLIED'));
    expect(stale.__typename).toBe('ReportObjectStatusPayload');
    expect(stale.reported.changes).toEqual([]);
    expect(stale.reported.stale.map((s: { objectId: string }) => s.objectId).sort()).toEqual([rule.id, limit.id].sort());
    const statuses = async () => {
      const q = await api.admin(
        `query($i: ID!) { instance(id: $i) { firewall { rules { status } } bandwidth { status } } portForwards(instanceId: $i) { edges { node { status } } } }`,
        { i: vm },
      );
      const i = q.data!.instance;
      return [q.data!.portForwards.edges[0].node.status, i.firewall.rules[0].status, i.bandwidth[0].status];
    };
    expect(await statuses()).toEqual(['APPLIED', 'PENDING', 'PENDING']);
    // the newer revision's report applies
    const current = await revisionOf(hostId);
    const fresh = await send(current, all('APPLIED'));
    expect(fresh.reported.stale).toEqual([]);
    expect(await statuses()).toEqual(['APPLIED', 'APPLIED', 'APPLIED']);
  });

  it('records 20,000 forwards APPLIED from two reports of 10,000 and skips the one created after the reported revision', async () => {
    const hostId = await createHost(api.admin, 'bulk-status-host');
    const { secret } = await agentToken(hostId);
    await createPool(api.admin, { name: 'bulk', kind: 'PRIVATE', network: 'br-bulk', cidr: '10.33.0.0/24' });
    const vm = (
      await api.admin(
        `mutation($h: ID!) { createInstance(input: { hostId: $h, name: "bulk-vm", nics: [{ network: "br-bulk" }] }) { ... on CreateInstancePayload { instance { id } } } }`,
        { h: hostId },
      )
    ).data!.createInstance.instance.id;
    const create = async (port: string) =>
      (
        await api.admin(
          `mutation($i: ID!, $p: String!) { createPortForward(input: { instanceId: $i, protocol: TCP, hostPort: $p, targetPort: "22" }) { ... on CreatePortForwardPayload { portForward { id } } } }`,
          { i: vm, p: port },
        )
      ).data!.createPortForward.portForward.id as string;
    const first = await create('20000');
    // 19,998 more like it on other host ports, in one statement: through the API this would take minutes
    const cloned = await controller.store.db.execute(sql`
      insert into port_forwards (id, host_id, instance_id, owner_id, protocol, host_address, host_port_start, host_port_end, target_address_id,
        target_address, target_port_start, source_cidrs, note, changed_revision, proto_lo, proto_hi, addr_lo, addr_hi)
      select gen_random_uuid(), host_id, instance_id, owner_id, protocol, host_address, 30000 + g, 30000 + g, target_address_id,
        target_address, target_port_start, source_cidrs, note, changed_revision, proto_lo, proto_hi, addr_lo, addr_hi
      from port_forwards, generate_series(1, 19998) as g where id = ${first}
      returning id`);
    const seeded = [first, ...rowsOf<{ id: string }>(cloned).map((r) => r.id)];
    expect(seeded).toHaveLength(19_999);
    const revision = await revisionOf(hostId);
    // created after `revision`: the agent's report of `revision` cannot have applied it
    const late = await create('20001');
    expect(await revisionOf(hostId)).toBe(revision + 1);
    const ids = [...seeded.slice(0, 5000), late, ...seeded.slice(5000)];
    const send = (objects: string[]) =>
      api
        .clientFor(secret)(REPORT_OBJECTS, {
          input: { hostId, revision, objects: objects.map((objectId) => ({ objectType: 'PORT_FORWARD', objectId, status: 'APPLIED' })) },
        })
        .then((x) => x.data!.reportObjectStatus);
    const one = await send(ids.slice(0, 10_000));
    const two = await send(ids.slice(10_000));
    expect(one.__typename).toBe('ReportObjectStatusPayload');
    expect(two.__typename).toBe('ReportObjectStatusPayload');
    expect(one.reported.stale).toEqual([{ objectType: 'PORT_FORWARD', objectId: late }]);
    expect(two.reported.stale).toEqual([]);
    const changed = [...one.reported.changes, ...two.reported.changes] as { objectId: string; status: string }[];
    expect(changed.map((c) => c.objectId)).toEqual(seeded);
    expect(changed.every((c) => c.status === 'APPLIED')).toBe(true);
    const counts = await controller.store.db.execute(
      sql`select status, count(*)::int as n from port_forwards where host_id = ${hostId} group by status order by status`,
    );
    expect(rowsOf<{ status: string; n: number }>(counts).map((r) => [r.status, Number(r.n)])).toEqual([
      ['applied', 19_999],
      ['pending', 1],
    ]);
    const statusOf = async (id: string) => (await api.admin(`query($id: ID!) { portForward(id: $id) { status } }`, { id })).data!.portForward.status;
    expect(await statusOf(late)).toBe('PENDING');
    expect(await statusOf(seeded[19_998]!)).toBe('APPLIED');

    // the same reports again change nothing; the late forward's own revision applies it
    expect((await send(ids.slice(0, 10_000))).reported).toEqual({ changes: [], stale: [{ objectType: 'PORT_FORWARD', objectId: late }] });
    const current = await api
      .clientFor(secret)(REPORT_OBJECTS, {
        input: { hostId, revision: revision + 1, objects: [{ objectType: 'PORT_FORWARD', objectId: late, status: 'APPLIED' }] },
      })
      .then((x) => x.data!.reportObjectStatus.reported);
    expect(current).toEqual({ changes: [{ objectId: late, status: 'APPLIED' }], stale: [] });
  });

  it("closes an agent's open connection with 4403 when its token is revoked, refuses it afterwards, and logs no secret", async () => {
    const hostId = await createHost(api.admin, 'revoked-host');
    const token = await agentToken(hostId);
    const agent = subscribeAgent(token.secret, hostId);
    await until(async () => (await agentOf(hostId)).online, 'online');
    const started = Date.now();
    const revoked = await api.admin(`mutation($id: ID!) { revokeApiToken(input: { tokenId: $id }) { __typename } }`, { id: token.id });
    expect(revoked.data!.revokeApiToken.__typename).toBe('RevokeApiTokenPayload');
    const closed = await agent.closed;
    const elapsed = Date.now() - started;
    expect(closed.code).toBe(4403);
    expect(elapsed).toBeLessThan(5000); // typically a few milliseconds; the margin is for a busy machine
    await until(() => agent.ended(), 'the subscription ended');
    await until(async () => !(await agentOf(hostId)).online, 'offline');

    const again = ws(token.secret);
    expect((await again.closed).code).toBe(4403);
    const refused = logs.filter((l) => l.includes('refused graphql-ws connection'));
    expect(refused.some((l) => l.includes(`revoked agent token ${token.prefix}`) && l.includes(`host ${hostId}`))).toBe(true);
    const bogus = ws('gh_definitely-not-a-token-000000000000000000000');
    expect((await bogus.closed).code).toBe(4403);
    await until(() => logs.some((l) => l.includes('unknown token gh_definit')), 'the unknown token logged');
    expect(logs.some((l) => l.includes('closing graphql-ws connection') && l.includes(token.id))).toBe(true);
    expect(logs.join('\n')).not.toContain(token.secret);
    expect(logs.join('\n')).not.toContain('gh_definitely-not-a-token-000000000000000000000');
  });

  it('ends an HTTP (server-sent events) subscription when its token is revoked', async () => {
    const user = await api.tenant('sse-user');
    const tokenId = (await user.client('{ me { tokens { id } } }')).data!.me.tokens[0].id;
    const response = await fetch(controller.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${user.secret}` },
      body: JSON.stringify({ query: 'subscription { auditLogAdded { action } }' }),
    });
    expect(response.status).toBe(200);
    const reader = response.body!.getReader();
    let ended = false;
    const drained = (async () => {
      for (;;) {
        const { done } = await reader.read();
        if (done) break;
      }
      ended = true;
    })();
    await sleep(300);
    expect(ended).toBe(false);
    const revoked = await post(controller.url, api.adminSecret, `mutation($id: ID!) { revokeApiToken(input: { tokenId: $id }) { __typename } }`, {
      id: tokenId,
    });
    expect(revoked.body.data.revokeApiToken.__typename).toBe('RevokeApiTokenPayload');
    await until(() => ended, 'the event stream to end');
    await drained;
  });
});
