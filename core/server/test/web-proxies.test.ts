/** Web proxy objects and domain templates through the API, on PGlite and PostgreSQL. */
import { beforeAll, describe, expect, it } from 'vitest';
import { ERROR_FIELDS, type Client } from '../src/testing/api.js';
import { selfSignedCertificate } from './support/certificates.js';
import { createPool } from '../src/testing/fixtures.js';
import { storeBackends } from '../src/testing/stores.js';
import { useStoreApi } from './support/suite.js';

const backends = await storeBackends();

const PROXY = 'id domain targetAddress targetPort targetProtocol tlsMode websocket status certificate { subject validTo }';
const CREATE = `mutation($input: CreateWebProxyInput!) { createWebProxy(input: $input) { __typename ... on CreateWebProxyPayload { webProxy { ${PROXY} } } ${ERROR_FIELDS} } }`;

async function createProxy(client: Client, input: Record<string, unknown>) {
  const r = await client(CREATE, { input });
  if (r.errors) throw new Error(JSON.stringify(r.errors));
  return r.data!.createWebProxy;
}

describe.each(backends)('web proxies on $name', (backend) => {
  const ctx = useStoreApi(backend, 'host-web');
  let vmId: string;
  let ann: { client: Client; id: string };
  let annVmId: string;
  const cert = selfSignedCertificate(['secure.example.com']);
  const wildcardCert = selfSignedCertificate(['*.wild.example.com']);
  const otherKey = selfSignedCertificate(['secure.example.com']).privateKeyPem;
  const expired = selfSignedCertificate(['old.example.com'], 30, true);

  beforeAll(async () => {
    await createPool(ctx.api.admin, { name: 'web', kind: 'PRIVATE', network: 'br-web', cidr: '10.11.0.0/24' });
    ann = await ctx.api.tenant('ann', { quotaWebProxies: 3 });
    const mk = async (name: string, ownerId?: string) =>
      (
        await ctx.api.admin(
          `mutation($h: ID!, $n: String!, $o: ID) { createInstance(input: { hostId: $h, name: $n, ownerId: $o, nics: [{ network: "br-web" }] }) { ... on CreateInstancePayload { instance { id } } } }`,
          {
            h: ctx.hostId,
            n: name,
            o: ownerId,
          },
        )
      ).data!.createInstance.instance.id as string;
    vmId = await mk('vm-web');
    annVmId = await mk('Ann VM 1', ann.id);
  });

  it('creates proxies with normalised domains and sensible TLS defaults', async () => {
    const exact = await createProxy(ctx.api.admin, { instanceId: vmId, domain: 'Shop.Example.com.', targetPort: 8080 });
    expect(exact.webProxy).toMatchObject({
      domain: 'shop.example.com',
      targetAddress: '10.11.0.1',
      targetPort: 8080,
      targetProtocol: 'HTTP',
      tlsMode: 'ACME',
      websocket: true,
      status: 'PENDING',
      certificate: null,
    });
    const wild = await createProxy(ctx.api.admin, { instanceId: vmId, domain: '*.apps.example.com', targetPort: 80 });
    expect(wild.webProxy.tlsMode).toBe('SELF_SIGNED');
    const idn = await createProxy(ctx.api.admin, { instanceId: vmId, domain: 'bücher.example.com', targetPort: 80, tlsMode: 'NONE' });
    expect(idn.webProxy.domain).toBe('xn--bcher-kva.example.com');
  });

  it('accepts an uploaded certificate that matches its key and covers the domain, and never returns the key', async () => {
    const r = await createProxy(ctx.api.admin, {
      instanceId: vmId,
      domain: 'secure.example.com',
      targetPort: 443,
      targetProtocol: 'HTTPS',
      tlsMode: 'UPLOADED',
      ...cert,
    });
    expect(r.webProxy.certificate.subject).toBe('CN=secure.example.com');
    const w = await createProxy(ctx.api.admin, { instanceId: vmId, domain: '*.wild.example.com', targetPort: 80, tlsMode: 'UPLOADED', ...wildcardCert });
    expect(w.__typename).toBe('CreateWebProxyPayload');
    const introspect = await ctx.api.admin(`{ __type(name: "WebProxy") { fields { name } } }`);
    expect(introspect.data!.__type.fields.map((f: { name: string }) => f.name)).not.toContain('privateKeyPem');
    const audit = await ctx.api.admin(`query($id: String!) { auditLog(objectId: $id) { edges { node { after } } } }`, { id: r.webProxy.id });
    expect(JSON.stringify(audit.data!.auditLog)).not.toContain('PRIVATE KEY');
  });

  describe('bad input gets a typed error naming the field and changes nothing', () => {
    const cases: [string, Record<string, unknown>, string, string][] = [
      ['a domain with spaces', { domain: 'my shop.example.com' }, 'VALIDATION_FAILED', 'input.domain'],
      ['a domain with a control character', { domain: 'shop\u0000.example.com' }, 'VALIDATION_FAILED', 'input.domain'],
      ['a wildcard in the wrong place', { domain: 'shop.*.example.com' }, 'VALIDATION_FAILED', 'input.domain'],
      ['an over-long label', { domain: `${'x'.repeat(64)}.example.com` }, 'VALIDATION_FAILED', 'input.domain'],
      ['a duplicate domain (other spelling)', { domain: 'SHOP.example.com' }, 'CONFLICT', 'input.domain'],
      ['ACME for a wildcard', { domain: '*.acme.example.com', tlsMode: 'ACME' }, 'VALIDATION_FAILED', 'input.tlsMode'],
      ['UPLOADED without a certificate', { domain: 'up.example.com', tlsMode: 'UPLOADED' }, 'VALIDATION_FAILED', 'input.certificatePem'],
      ['a certificate for another domain', { domain: 'other.example.com', tlsMode: 'UPLOADED', ...cert }, 'VALIDATION_FAILED', 'input.certificatePem'],
      [
        'a key that does not match',
        { domain: 'secure2.example.com', tlsMode: 'UPLOADED', certificatePem: cert.certificatePem, privateKeyPem: otherKey },
        'VALIDATION_FAILED',
        'input.privateKeyPem',
      ],
      ['an expired certificate', { domain: 'old.example.com', tlsMode: 'UPLOADED', ...expired }, 'VALIDATION_FAILED', 'input.certificatePem'],
      [
        'garbage as a certificate',
        { domain: 'junk.example.com', tlsMode: 'UPLOADED', certificatePem: 'hello', privateKeyPem: cert.privateKeyPem },
        'VALIDATION_FAILED',
        'input.certificatePem',
      ],
      ['a certificate with ACME', { domain: 'mixed.example.com', tlsMode: 'ACME', ...cert }, 'VALIDATION_FAILED', 'input.certificatePem'],
      ['port 0', { domain: 'port.example.com', targetPort: 0 }, 'VALIDATION_FAILED', 'input.targetPort'],
      ['a target the instance does not hold', { domain: 't.example.com', targetAddress: '127.0.0.1' }, 'VALIDATION_FAILED', 'input.targetAddress'],
    ];
    it.each(cases)('%s', async (_label, overrides, code, field) => {
      const before = await ctx.api.snapshot();
      const r = await createProxy(ctx.api.admin, { instanceId: vmId, targetPort: 80, ...overrides });
      expect(r).toMatchObject({ code, field });
      expect(await ctx.api.snapshot()).toEqual(before);
    });
  });

  it("gives each of a user's instances a sub-domain from their wildcard template, and keeps others out of it", async () => {
    const t = await ann.client(
      `mutation { createProxyDomainTemplate(input: { pattern: "*.Ann.Example.com", targetPort: 8080 }) { __typename ... on CreateProxyDomainTemplatePayload { template { pattern } } ${ERROR_FIELDS} } }`,
    );
    expect(t.data!.createProxyDomainTemplate.template.pattern).toBe('*.ann.example.com');
    const domains = await ann.client(`query($id: ID!) { instance(id: $id) { templateDomains } }`, { id: annVmId });
    expect(domains.data!.instance.templateDomains).toEqual(['ann-vm-1.ann.example.com']);
    expect(await createProxy(ctx.api.admin, { instanceId: vmId, domain: 'x.ann.example.com', targetPort: 80 })).toMatchObject({
      code: 'CONFLICT',
      field: 'input.domain',
    });
    const covering = await ann.client(
      `mutation { createProxyDomainTemplate(input: { pattern: "*.example.com", targetPort: 80 }) { __typename ${ERROR_FIELDS} } }`,
    );
    expect(covering.data!.createProxyDomainTemplate).toMatchObject({ code: 'CONFLICT', field: 'input.pattern' });
    expect((await createProxy(ann.client, { instanceId: annVmId, domain: 'api.ann.example.com', targetPort: 3000 })).__typename).toBe('CreateWebProxyPayload');
  });

  it('keeps tenants to their own instances and quota', async () => {
    expect(await createProxy(ann.client, { instanceId: vmId, domain: 'steal.example.com', targetPort: 80 })).toMatchObject({
      code: 'NOT_FOUND',
      field: 'input.instanceId',
    });
    // a domain another user serves, in any spelling
    expect(await createProxy(ann.client, { instanceId: annVmId, domain: 'SHOP.example.com.', targetPort: 80 })).toMatchObject({
      code: 'CONFLICT',
      field: 'input.domain',
    });
    await createProxy(ann.client, { instanceId: annVmId, domain: 'two.ann-site.com', targetPort: 80 });
    await createProxy(ann.client, { instanceId: annVmId, domain: 'three.ann-site.com', targetPort: 80 });
    expect(await createProxy(ann.client, { instanceId: annVmId, domain: 'four.ann-site.com', targetPort: 80 })).toMatchObject({ code: 'QUOTA_EXCEEDED' });
    const mine = await ann.client(`{ webProxies { edges { node { domain } } } }`);
    expect(mine.data!.webProxies.edges).toHaveLength(3);
  });

  it('removes proxies with the instance', async () => {
    const del = await ctx.api.admin(`mutation($id: ID!) { deleteInstance(input: { instanceId: $id }) { __typename ${ERROR_FIELDS} } }`, { id: annVmId });
    expect(del.data!.deleteInstance.__typename).toBe('DeleteInstancePayload');
    expect((await ann.client(`{ webProxies { edges { node { domain } } } }`)).data!.webProxies.edges).toEqual([]);
  });
});
