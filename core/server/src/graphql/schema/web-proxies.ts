/** Web proxy objects (domains served by the reverse proxy) and per-user wildcard templates. */
import { X509Certificate } from 'node:crypto';
import type { DomainTemplate, WebProxy } from '../../services/web-proxy-service.js';
import { builder } from '../builder.js';
import { requireActor } from '../context.js';
import { connectionComplexity, connectionOf, pageOf } from '../pagination.js';
import { InstanceRef } from './instances.js';
import { resultOf } from './mutation-result.js';
import { ApplyStatusEnum } from './port-forwards.js';

const TargetProtocolEnum = builder.enumType('ProxyTargetProtocol', { values: { HTTP: { value: 'http' }, HTTPS: { value: 'https' } } as const });
const TlsModeEnum = builder.enumType('TlsMode', {
  description:
    "NONE: plain HTTP. SELF_SIGNED: the proxy's internal CA. UPLOADED: your certificate and key. ACME: Let's Encrypt (or the configured ACME directory).",
  values: { NONE: { value: 'none' }, SELF_SIGNED: { value: 'self_signed' }, UPLOADED: { value: 'uploaded' }, ACME: { value: 'acme' } } as const,
});

const CertificateRef = builder.objectRef<X509Certificate>('UploadedCertificate').implement({
  fields: (t) => ({
    subject: t.string({ resolve: (c) => c.subject }),
    issuer: t.string({ resolve: (c) => c.issuer }),
    subjectAltName: t.string({ nullable: true, resolve: (c) => c.subjectAltName ?? null }),
    validFrom: t.field({ type: 'DateTime', resolve: (c) => new Date(c.validFrom) }),
    validTo: t.field({ type: 'DateTime', resolve: (c) => new Date(c.validTo) }),
  }),
});

const WebProxyRef = builder.objectRef<WebProxy>('WebProxy').implement({
  description: 'The private key of an uploaded certificate is never returned.',
  fields: (t) => ({
    id: t.exposeID('id'),
    domain: t.exposeString('domain', { description: 'Lower-case ASCII (IDNs as punycode); `*.` for a wildcard.' }),
    instance: t.field({ type: InstanceRef, resolve: async (p, _a, ctx) => (await ctx.services.instances.get(requireActor(ctx), p.instanceId))! }),
    targetAddress: t.exposeString('targetAddress'),
    targetPort: t.exposeInt('targetPort'),
    targetProtocol: t.field({ type: TargetProtocolEnum, resolve: (p) => p.targetProtocol }),
    tlsMode: t.field({ type: TlsModeEnum, resolve: (p) => p.tlsMode }),
    certificate: t.field({ type: CertificateRef, nullable: true, resolve: (p) => (p.certificatePem ? new X509Certificate(p.certificatePem) : null) }),
    websocket: t.exposeBoolean('websocket'),
    status: t.field({ type: ApplyStatusEnum, resolve: (p) => p.status }),
    statusError: t.exposeString('statusError', { nullable: true }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
  }),
});

const DomainTemplateRef = builder.objectRef<DomainTemplate>('ProxyDomainTemplate').implement({
  fields: (t) => ({
    id: t.exposeID('id'),
    pattern: t.exposeString('pattern'),
    targetPort: t.exposeInt('targetPort'),
    targetProtocol: t.field({ type: TargetProtocolEnum, resolve: (p) => p.targetProtocol }),
  }),
});

builder.objectField(InstanceRef, 'templateDomains', (t) =>
  t.stringList({
    description: "Sub-domains this instance gets from its owner's wildcard templates.",
    resolve: (i, _a, ctx) => ctx.services.proxies.templateDomainsOf(i),
  }),
);

builder.queryFields((t) => ({
  webProxy: t.field({
    type: WebProxyRef,
    nullable: true,
    args: { id: t.arg.id({ required: true }) },
    resolve: (_r, a, ctx) => ctx.services.proxies.get(requireActor(ctx), a.id),
  }),
  webProxies: t.connection({
    type: WebProxyRef,
    args: { instanceId: t.arg.id({ required: false }) },
    complexity: connectionComplexity,
    resolve: async (_r, args, ctx) => {
      const page = pageOf(args);
      return connectionOf(await ctx.services.proxies.list(requireActor(ctx), { instanceId: args.instanceId }, page), page);
    },
  }),
  proxyDomainTemplates: t.field({ type: [DomainTemplateRef], resolve: (_r, _a, ctx) => ctx.services.proxies.templates(requireActor(ctx)) }),
}));

const CreateWebProxyInput = builder.inputType('CreateWebProxyInput', {
  fields: (t) => ({
    instanceId: t.id({ required: true }),
    domain: t.string({ required: true, description: 'shop.example.com or *.example.com; IDNs and upper case are normalised.' }),
    targetAddress: t.string({ description: 'An address of the instance. Absent: its first IPv4 address.' }),
    targetPort: t.int({ required: true }),
    targetProtocol: t.field({ type: TargetProtocolEnum, description: 'Default HTTP.' }),
    tlsMode: t.field({ type: TlsModeEnum, description: 'Default ACME for exact domains, SELF_SIGNED for wildcards.' }),
    certificatePem: t.string({ description: 'UPLOADED: the certificate (chain) in PEM.' }),
    privateKeyPem: t.string({ description: 'UPLOADED: the unencrypted private key in PEM. Never returned.' }),
    websocket: t.boolean({ description: 'Pass WebSocket upgrades through. Default true.' }),
  }),
});

const DeleteWebProxyInput = builder.inputType('DeleteWebProxyInput', { fields: (t) => ({ webProxyId: t.id({ required: true }) }) });
const CreateProxyDomainTemplateInput = builder.inputType('CreateProxyDomainTemplateInput', {
  fields: (t) => ({
    pattern: t.string({ required: true, description: 'e.g. *.user1.example.com' }),
    targetPort: t.int({ required: true }),
    targetProtocol: t.field({ type: TargetProtocolEnum }),
  }),
});
const DeleteProxyDomainTemplateInput = builder.inputType('DeleteProxyDomainTemplateInput', { fields: (t) => ({ templateId: t.id({ required: true }) }) });

builder.mutationFields((t) => ({
  createWebProxy: t.field({
    type: WebProxyRef,
    args: { input: t.arg({ type: CreateWebProxyInput, required: true }) },
    errors: resultOf('CreateWebProxy', 'webProxy'),
    resolve: (_r, { input }, ctx) => ctx.services.proxies.create(requireActor(ctx), input),
  }),
  deleteWebProxy: t.field({
    type: WebProxyRef,
    args: { input: t.arg({ type: DeleteWebProxyInput, required: true }) },
    errors: resultOf('DeleteWebProxy', 'webProxy'),
    resolve: (_r, { input }, ctx) => ctx.services.proxies.delete(requireActor(ctx), input.webProxyId),
  }),
  createProxyDomainTemplate: t.field({
    type: DomainTemplateRef,
    args: { input: t.arg({ type: CreateProxyDomainTemplateInput, required: true }) },
    errors: resultOf('CreateProxyDomainTemplate', 'template'),
    resolve: (_r, { input }, ctx) => ctx.services.proxies.createTemplate(requireActor(ctx), input),
  }),
  deleteProxyDomainTemplate: t.field({
    type: DomainTemplateRef,
    args: { input: t.arg({ type: DeleteProxyDomainTemplateInput, required: true }) },
    errors: resultOf('DeleteProxyDomainTemplate', 'template'),
    resolve: (_r, { input }, ctx) => ctx.services.proxies.deleteTemplate(requireActor(ctx), input.templateId),
  }),
}));
