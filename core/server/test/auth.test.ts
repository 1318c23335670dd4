/**
 * Authentication and transport: bearer tokens over HTTP and graphql-ws, revocation, scopes,
 * query depth/complexity limits, request ids, and the live audit subscription.
 */
import { createClient, type Client as WsClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { startController, type Controller } from '../src/server.js';
import { createTestApi, type TestApi } from '../src/testing/api.js';
import { post } from '../src/testing/http.js';

describe('authentication and transports', () => {
  let controller: Controller;
  let api: TestApi;
  let wsUrl: string;
  const clients: WsClient[] = [];

  beforeAll(async () => {
    controller = await startController({ store: { kind: 'pglite' }, port: 0, bootstrap: false });
    api = await createTestApi(controller.store, controller.container);
    wsUrl = controller.url.replace('http://', 'ws://');
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.dispose()));
    await controller?.close();
  });

  function ws(secret: string | null): WsClient {
    const client = createClient({
      url: wsUrl,
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      lazy: false,
      connectionParams: secret ? { Authorization: `Bearer ${secret}` } : {},
      onNonLazyError: () => {},
    });
    clients.push(client);
    return client;
  }

  it('refuses requests without a token, with a malformed header, or with an unknown token', async () => {
    const none = await post(controller.url, null, '{ me { id } }');
    expect(none.body.errors?.[0]).toMatchObject({ extensions: { code: 'UNAUTHENTICATED' } });
    const malformed = await fetch(controller.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Token abc' },
      body: '{"query":"{ me { id } }"}',
    });
    expect(malformed.status).toBe(401);
    const unknown = await post(controller.url, 'gh_not-a-real-token', '{ me { id } }');
    expect(unknown.status).toBe(401);
    expect(unknown.body.errors?.[0]?.message).toContain('Invalid or revoked');
  });

  it('serves the schema to an unauthenticated introspection, so GraphiQL loads', async () => {
    const r = await post(controller.url, null, '{ __schema { queryType { name } } }');
    expect(r.body.data.__schema.queryType.name).toBe('Query');
    const page = await fetch(controller.url, { headers: { accept: 'text/html' } });
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('GraphiQL');
  });

  it('stops accepting a token the moment it is revoked', async () => {
    const dave = await api.tenant('dave');
    expect((await post(controller.url, dave.secret, '{ me { name } }')).body.data.me.name).toBe('dave');
    const tokens = await post(controller.url, dave.secret, '{ me { tokens { id } } }');
    const tokenId = tokens.body.data.me.tokens[0].id;
    const revoked = await post(
      controller.url,
      dave.secret,
      `mutation($id: ID!) { revokeApiToken(input: { tokenId: $id }) { ... on RevokeApiTokenPayload { token { revokedAt } } } }`,
      { id: tokenId },
    );
    expect(revoked.body.data.revokeApiToken.token.revokedAt).toEqual(expect.any(String));
    expect((await post(controller.url, dave.secret, '{ me { name } }')).status).toBe(401);
  });

  it('refuses agent-scoped tokens on user operations and admin scope for non-admins', async () => {
    const erin = await api.tenant('erin');
    const hostId = (await api.admin('mutation { createHost(input: { name: "agent-host", backend: LINUX }) { ... on CreateHostPayload { host { id } } } }'))
      .data!.createHost.host.id;
    const noHost = await api.admin(
      `mutation($u: ID!) { createApiToken(input: { userId: $u, name: "agent-0", scope: AGENT }) { __typename ... on Error { code field } } }`,
      { u: erin.id },
    );
    expect(noHost.data!.createApiToken).toMatchObject({ code: 'VALIDATION_FAILED', field: 'input.hostId' });
    const agent = await api.admin(
      `mutation($u: ID!, $h: ID!) { createApiToken(input: { userId: $u, name: "agent-1", scope: AGENT, hostId: $h }) { ... on CreateApiTokenPayload { created { secret token { scope hostId } } } } }`,
      { u: erin.id, h: hostId },
    );
    expect(agent.data!.createApiToken.created.token.hostId).toBe(hostId);
    expect(agent.data!.createApiToken.created.token.scope).toBe('AGENT');
    const r = await post(controller.url, agent.data!.createApiToken.created.secret, '{ me { id } }');
    expect(r.body.errors?.[0]).toMatchObject({ extensions: { code: 'FORBIDDEN' } });
    const adminForUser = await api.admin(
      `mutation($u: ID!) { createApiToken(input: { userId: $u, name: "nope", scope: ADMIN }) { __typename ... on Error { code field } } }`,
      { u: erin.id },
    );
    expect(adminForUser.data!.createApiToken).toMatchObject({ code: 'VALIDATION_FAILED', field: 'input.scope' });
  });

  it('refuses queries beyond the depth and complexity limits before running them', async () => {
    const deep = await post(
      controller.url,
      api.adminSecret,
      '{ instances { edges { node { nics { addresses { pool { host { name } entries { edges { node { pool { name } } } } } } } } } } }',
    );
    expect(deep.body.errors?.[0]?.message).toMatch(/depth|complexity/i);
    expect(deep.body.data ?? null).toBeNull();
    const wide = await post(
      controller.url,
      api.adminSecret,
      '{ ipPools(first: 500) { edges { node { entries(first: 500) { edges { node { address } } } } } } }',
    );
    expect(wide.body.errors?.[0]?.message).toMatch(/complexity/i);
  });

  it("accepts the README's overview query within the limits", async () => {
    const r = await post(
      controller.url,
      api.adminSecret,
      'query { instances { edges { node { name nics { name mac addresses { cidr kind } } } } } auditLog(first: 5) { edges { node { at action objectType objectId } } } }',
    );
    expect(r.body.errors).toBeUndefined();
    expect(r.body.data.auditLog.edges.length).toBeGreaterThan(0);
  });

  it('refuses a request body over 16 MiB with 413 before parsing it (a 50 MB CSV upload)', async () => {
    const csv = 'protocol,host_port,vm_ip,vm_port,note\n'.padEnd(50_000_000, 'x');
    const r = await fetch(controller.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${api.adminSecret}` },
      body: JSON.stringify({ query: 'mutation($c: String!) { importPortForwards(input: { hostId: "x", csv: $c }) { __typename } }', variables: { c: csv } }),
    });
    expect(r.status).toBe(413);
    expect(((await r.json()) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code).toBe('REQUEST_ENTITY_TOO_LARGE');
  });

  it("uses the caller's X-Request-Id in audit entries", async () => {
    const r = await post(
      controller.url,
      api.adminSecret,
      'mutation { createHost(input: { name: "req-id-host", backend: DOCKER }) { ... on CreateHostPayload { host { id } } } }',
      undefined,
      { 'x-request-id': 'req-abc-123' },
    );
    const hostId = r.body.data.createHost.host.id;
    const audit = await post(controller.url, api.adminSecret, 'query($id: String!) { auditLog(objectId: $id) { edges { node { requestId action } } } }', {
      id: hostId,
    });
    expect(audit.body.data.auditLog.edges[0].node).toEqual({ requestId: 'req-abc-123', action: 'host.create' });
  });

  it("authenticates graphql-ws connections from connection params and streams only the caller's audit entries", async () => {
    const frank = await api.tenant('frank');
    const grace = await api.tenant('grace');
    const hostId = (await api.admin('mutation { createHost(input: { name: "ws-host", backend: LINUX }) { ... on CreateHostPayload { host { id } } } }')).data!
      .createHost.host.id;

    const received: { action: string; ownerId: string | null }[] = [];
    const client = ws(frank.secret);
    const done = new Promise<void>((resolve, reject) => {
      client.subscribe<{ auditLogAdded: { action: string; ownerId: string | null } }>(
        { query: 'subscription { auditLogAdded { action ownerId } }' },
        {
          next: (msg) => {
            if (msg.data) received.push(msg.data.auditLogAdded);
            if (received.some((e) => e.action === 'instance.create')) resolve();
          },
          error: reject,
          complete: () => {},
        },
      );
    });
    await new Promise((r) => setTimeout(r, 300)); // let the subscription register
    await api.admin(`mutation($h: ID!, $o: ID!) { createInstance(input: { hostId: $h, name: "grace-vm", ownerId: $o }) { __typename } }`, {
      h: hostId,
      o: grace.id,
    });
    await api.admin(`mutation($h: ID!, $o: ID!) { createInstance(input: { hostId: $h, name: "frank-vm", ownerId: $o }) { __typename } }`, {
      h: hostId,
      o: frank.id,
    });
    await done;
    expect(received.every((e) => e.ownerId === frank.id)).toBe(true);
    expect(received.map((e) => e.action)).toContain('instance.create');
  });

  it('closes graphql-ws connections without a valid token', async () => {
    const client = ws('gh_bogus');
    const closed = await new Promise<{ code: number }>((resolve) => {
      client.on('closed', (event) => resolve(event as { code: number }));
    });
    expect(closed.code).toBe(4403);
  });
});
