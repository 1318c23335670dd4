/**
 * Editing web proxies in place (`updateWebProxy`) through the API, on PGlite and PostgreSQL: the
 * checks of a create (domain, port, TLS mode, uploaded certificate, the target an address of the
 * proxy's instance), CONFLICT for a domain served or claimed by others, one winner when two edits
 * race for one domain, audit before/after with the key redacted, and the status back to PENDING.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { ERROR_FIELDS, type Client } from '../src/testing/api.js';
import { selfSignedCertificate } from './support/certificates.js';
import { createPool } from '../src/testing/fixtures.js';
import { storeBackends } from '../src/testing/stores.js';
import { useStoreApi } from './support/suite.js';

const backends = await storeBackends();

const PROXY = 'id domain targetAddress targetPort targetProtocol tlsMode websocket status certificate { subject }';
const CREATE = `mutation($input: CreateWebProxyInput!) { createWebProxy(input: $input) { __typename ... on CreateWebProxyPayload { webProxy { ${PROXY} } } ${ERROR_FIELDS} } }`;
const UPDATE = `mutation($input: UpdateWebProxyInput!) { updateWebProxy(input: $input) { __typename ... on UpdateWebProxyPayload { webProxy { ${PROXY} } } ${ERROR_FIELDS} } }`;

async function call(client: Client, query: string, input: Record<string, unknown>) {
  const r = await client(query, { input });
  if (r.errors) throw new Error(JSON.stringify(r.errors));
  return Object.values(r.data!)[0] as any;
}

describe.each(backends)('editing web proxies on $name', (backend) => {
  const ctx = useStoreApi(backend, 'host-web-edit');
  let vmId: string;
  let cy: { client: Client; id: string };
  let cyVmId: string;
  const cert = selfSignedCertificate(['secure-edit.example.com']);
  const other = selfSignedCertificate(['other-edit.example.com']);

  beforeAll(async () => {
    await createPool(ctx.api.admin, { name: 'web-edit', kind: 'PRIVATE', network: 'br-web-edit', cidr: '10.12.0.0/24' });
    cy = await ctx.api.tenant('cy', { quotaWebProxies: 5 });
    const mk = async (name: string, addresses: string[], ownerId?: string) =>
      (
        await ctx.api.admin(
          `mutation($h: ID!, $n: String!, $o: ID, $a: [String!]) { createInstance(input: { hostId: $h, name: $n, ownerId: $o, nics: [{ network: "br-web-edit", addresses: $a }] }) { ... on CreateInstancePayload { instance { id } } } }`,
          { h: ctx.hostId, n: name, o: ownerId, a: addresses },
        )
      ).data!.createInstance.instance.id as string;
    vmId = await mk('vm-web-edit', ['10.12.0.5', '10.12.0.6']);
    cyVmId = await mk('cy-vm', ['10.12.0.9'], cy.id);
  });

  it('edits target, protocol, WebSocket, TLS and domain in place, PENDING again, audited with the key redacted', async () => {
    const p = (await call(ctx.api.admin, CREATE, { instanceId: vmId, domain: 'edit.example.com', targetPort: 80, tlsMode: 'NONE' })).webProxy;
    const edits: [Record<string, unknown>, Record<string, unknown>][] = [
      [{ targetPort: 8080 }, { targetPort: 8080, targetAddress: '10.12.0.5', domain: 'edit.example.com' }],
      [
        { targetAddress: '10.12.0.6', targetProtocol: 'HTTPS', websocket: false },
        { targetAddress: '10.12.0.6', targetProtocol: 'HTTPS', websocket: false },
      ],
      [
        { domain: 'Secure-Edit.example.com', tlsMode: 'UPLOADED', certificatePem: cert.certificatePem, privateKeyPem: cert.privateKeyPem },
        { domain: 'secure-edit.example.com', tlsMode: 'UPLOADED' },
      ],
      // staying UPLOADED keeps the certificate
      [{ targetPort: 8443 }, { targetPort: 8443, tlsMode: 'UPLOADED', certificate: { subject: expect.stringContaining('secure-edit.example.com') } }],
      [{ tlsMode: 'SELF_SIGNED' }, { tlsMode: 'SELF_SIGNED', certificate: null }],
    ];
    for (const [input, expected] of edits) {
      const r = await call(ctx.api.admin, UPDATE, { webProxyId: p.id, ...input });
      expect(r.__typename, JSON.stringify(r)).toBe('UpdateWebProxyPayload');
      expect(r.webProxy).toMatchObject({ id: p.id, status: 'PENDING', ...expected });
    }
    const audit = await ctx.api.admin(`query($id: String!) { auditLog(objectId: $id) { edges { node { action before after } } } }`, { id: p.id });
    const updates = audit.data!.auditLog.edges.map((e: { node: any }) => e.node).filter((n: any) => n.action === 'webProxy.update');
    expect(updates).toHaveLength(edits.length);
    const upload = updates.find((u: any) => u.after.tlsMode === 'uploaded' && u.before.tlsMode === 'none');
    expect(upload).toMatchObject({ before: { domain: 'edit.example.com' }, after: { domain: 'secure-edit.example.com', privateKeyPem: '(redacted)' } });
    expect(JSON.stringify(updates)).not.toContain('PRIVATE KEY');
  });

  it('refuses what a create refuses, naming the field, and changes nothing', async () => {
    const p = (await call(ctx.api.admin, CREATE, { instanceId: vmId, domain: 'keep.example.com', targetPort: 80, tlsMode: 'NONE' })).webProxy;
    await call(ctx.api.admin, CREATE, { instanceId: vmId, domain: 'taken-edit.example.com', targetPort: 80, tlsMode: 'NONE' });
    await call(cy.client, CREATE, { instanceId: cyVmId, domain: '*.cy-edit.example.com', targetPort: 80 });
    const bad: [Record<string, unknown>, string, string][] = [
      [{ targetPort: 0 }, 'VALIDATION_FAILED', 'input.targetPort'],
      [{ domain: 'not a domain' }, 'VALIDATION_FAILED', 'input.domain'],
      [{ domain: '*.wild-edit.example.com', tlsMode: 'ACME' }, 'VALIDATION_FAILED', 'input.tlsMode'],
      [{ tlsMode: 'UPLOADED' }, 'VALIDATION_FAILED', 'input.certificatePem'],
      [{ tlsMode: 'UPLOADED', certificatePem: other.certificatePem, privateKeyPem: other.privateKeyPem }, 'VALIDATION_FAILED', 'input.certificatePem'],
      [{ certificatePem: cert.certificatePem }, 'VALIDATION_FAILED', 'input.certificatePem'],
      [{ targetAddress: '10.12.0.9' }, 'VALIDATION_FAILED', 'input.targetAddress'],
      [{ domain: 'taken-edit.example.com' }, 'CONFLICT', 'input.domain'],
      [{ domain: 'a.cy-edit.example.com' }, 'CONFLICT', 'input.domain'],
      [{ webProxyId: 'nope' }, 'VALIDATION_FAILED', 'input.webProxyId'],
      [{ webProxyId: '00000000-0000-4000-8000-000000000000' }, 'NOT_FOUND', 'input.webProxyId'],
    ];
    const snapshot = await ctx.api.snapshot();
    for (const [input, code, field] of bad) {
      expect(await call(ctx.api.admin, UPDATE, { webProxyId: p.id, ...input }), JSON.stringify(input)).toMatchObject({ code, field });
    }
    expect(await ctx.api.snapshot()).toEqual(snapshot);
    const now = await ctx.api.admin(`query($id: ID!) { webProxy(id: $id) { ${PROXY} } }`, { id: p.id });
    expect(now.data!.webProxy).toEqual(p);
    // another tenant's proxy is NOT_FOUND
    expect(await call(cy.client, UPDATE, { webProxyId: p.id, targetPort: 81 })).toMatchObject({ code: 'NOT_FOUND', field: 'input.webProxyId' });
  });

  it('gives one winner when edits race for one domain', async () => {
    const proxies = await Promise.all(
      [0, 1, 2, 3].map(
        async (i) => (await call(ctx.api.admin, CREATE, { instanceId: vmId, domain: `race-${i}.example.com`, targetPort: 80, tlsMode: 'NONE' })).webProxy,
      ),
    );
    const outcomes = await Promise.all(proxies.map((p) => call(ctx.api.admin, UPDATE, { webProxyId: p.id, domain: 'raced.example.com' })));
    expect(
      outcomes.filter((o) => o.__typename === 'UpdateWebProxyPayload'),
      JSON.stringify(outcomes),
    ).toHaveLength(1);
    expect(outcomes.filter((o) => o.code === 'CONFLICT')).toHaveLength(3);
  });
});
