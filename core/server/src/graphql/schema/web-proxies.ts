/** Web proxy objects (domains served by the reverse proxy) and per-user wildcard templates. */
import { ConflictError, ForbiddenError, NotFoundError, QuotaExceededError, ValidationError } from '../../support/errors.js';
import { X509Certificate } from 'node:crypto';
import type { RenewalResult } from '../../proxy/proxy-manager.js';
import type { DomainTemplate, ProxyTraffic, WebProxy } from '../../services/web-proxy-service.js';
import { builder } from '../builder.js';
import { requireActor } from '../context.js';
import { connectionComplexity, connectionOf, pageOf } from '../pagination.js';
import { InstanceRef } from './instances.js';
import { resultOf } from './mutation-result.js';
import { ApplyStatusEnum } from './apply-status.js';

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

const TargetStateEnum = builder.enumType('ProxyTargetState', {
  values: {
    OK: { value: 'ok', description: 'The target answers.' },
    INSTANCE_STOPPED: { value: 'instance_stopped', description: "The host's agent reports the instance stopped." },
    CONNECTION_REFUSED: { value: 'connection_refused', description: 'Nothing listens on the port.' },
    TIMEOUT: { value: 'timeout', description: 'No answer: the address is unreachable or a firewall drops the traffic.' },
    UNREACHABLE: { value: 'unreachable', description: 'No route to the address.' },
    TLS_MISMATCH: { value: 'tls_mismatch', description: 'The target speaks TLS where the proxy sends HTTP, or the other way round.' },
    BAD_RESPONSE: { value: 'bad_response', description: 'The port answers, but neither HTTP nor TLS.' },
  } as const,
});

const CertificateStatusRef = builder.objectRef<WebProxy>('ProxyCertificateStatus').implement({
  fields: (t) => ({
    issuer: t.exposeString('certIssuer', { nullable: true, description: 'Issuer of the served certificate; null while none is served.' }),
    notAfter: t.expose('certNotAfter', { type: 'DateTime', nullable: true }),
    lastError: t.exposeString('certError', {
      nullable: true,
      description: "Why no valid certificate is served (Caddy's issuance error), or that an uploaded one expires soon.",
    }),
    checkedAt: t.expose('certCheckedAt', { type: 'DateTime', nullable: true }),
  }),
});

const TargetHealthRef = builder.objectRef<WebProxy>('ProxyTargetHealth').implement({
  fields: (t) => ({
    state: t.field({ type: TargetStateEnum, resolve: (p) => p.targetState as never }),
    detail: t.string({ resolve: (p) => p.targetDetail ?? '' }),
    checkedAt: t.field({ type: 'DateTime', resolve: (p) => p.targetCheckedAt! }),
  }),
});

const ProxyTrafficRef = builder.objectRef<ProxyTraffic>('ProxyTraffic').implement({
  fields: (t) => ({
    requests: t.field({ type: 'BigInt', resolve: (c) => BigInt(c.requests) }),
    bytesSent: t.field({ type: 'BigInt', description: 'Response bodies sent to clients.', resolve: (c) => BigInt(c.bytesSent) }),
    bytesReceived: t.field({ type: 'BigInt', description: 'Request bodies received from clients.', resolve: (c) => BigInt(c.bytesReceived) }),
    serverErrors: t.field({ type: 'BigInt', description: 'Responses 500-599.', resolve: (c) => BigInt(c.serverErrors) }),
    lastRequestAt: t.expose('lastRequestAt', { type: 'DateTime', nullable: true }),
  }),
});

const RenewalOutcomeEnum = builder.enumType('CertificateRenewalOutcome', {
  values: { OK: { value: 'ok' }, RENEWED: { value: 'renewed' }, FAILED: { value: 'failed' }, UPLOAD_NEEDED: { value: 'upload_needed' } } as const,
});

const RenewalResultRef = builder.objectRef<RenewalResult>('CertificateRenewal').implement({
  fields: (t) => ({
    webProxyId: t.id({ resolve: (r) => r.proxyId }),
    domain: t.exposeString('domain'),
    outcome: t.field({ type: RenewalOutcomeEnum, resolve: (r) => r.outcome }),
    notAfterBefore: t.expose('notAfterBefore', { type: 'DateTime', nullable: true }),
    notAfterAfter: t.expose('notAfterAfter', { type: 'DateTime', nullable: true }),
    detail: t.exposeString('detail'),
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
    status: t.field({
      type: ApplyStatusEnum,
      description: 'APPLIED: Caddy serves it. FAILED: Caddy refused it (statusError has its message).',
      resolve: (p) => p.status,
    }),
    statusError: t.exposeString('statusError', { nullable: true }),
    certificateStatus: t.field({
      type: CertificateStatusRef,
      nullable: true,
      description: 'The certificate Caddy serves for the domain, as last checked over TLS; null for TLS mode NONE.',
      resolve: (p) => (p.tlsMode === 'none' ? null : p),
    }),
    targetHealth: t.field({
      type: TargetHealthRef,
      nullable: true,
      description: 'Why the target does or does not answer, as last diagnosed (after a 502, or by diagnoseWebProxy); null until then.',
      resolve: (p) => (p.targetState ? p : null),
    }),
    traffic: t.field({
      type: ProxyTrafficRef,
      description: "Requests and bytes through the proxy since it was created, from Caddy's access log (flushed every few seconds).",
      resolve: async (p, _a, ctx) => ctx.services.proxies.traffic(p.id),
    }),
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
    errors: resultOf('CreateWebProxy', 'webProxy', [ValidationError, NotFoundError, ConflictError, QuotaExceededError]),
    resolve: (_r, { input }, ctx) => ctx.services.proxies.create(requireActor(ctx), input),
  }),
  deleteWebProxy: t.field({
    type: WebProxyRef,
    args: { input: t.arg({ type: DeleteWebProxyInput, required: true }) },
    errors: resultOf('DeleteWebProxy', 'webProxy', [ValidationError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.proxies.delete(requireActor(ctx), input.webProxyId),
  }),
  createProxyDomainTemplate: t.field({
    type: DomainTemplateRef,
    args: { input: t.arg({ type: CreateProxyDomainTemplateInput, required: true }) },
    errors: resultOf('CreateProxyDomainTemplate', 'template', [ValidationError, ConflictError]),
    resolve: (_r, { input }, ctx) => ctx.services.proxies.createTemplate(requireActor(ctx), input),
  }),
  deleteProxyDomainTemplate: t.field({
    type: DomainTemplateRef,
    args: { input: t.arg({ type: DeleteProxyDomainTemplateInput, required: true }) },
    errors: resultOf('DeleteProxyDomainTemplate', 'template', [ValidationError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.proxies.deleteTemplate(requireActor(ctx), input.templateId),
  }),
}));

const DiagnoseWebProxyInput = builder.inputType('DiagnoseWebProxyInput', { fields: (t) => ({ webProxyId: t.id({ required: true }) }) });
const RenewCertificatesInput = builder.inputType('RenewCertificatesInput', {
  fields: (t) => ({ withinDays: t.int({ description: 'Renew certificates expiring within this many days (default 30, 1-3650).' }) }),
});

builder.mutationFields((t) => ({
  diagnoseWebProxy: t.field({
    type: WebProxyRef,
    description: "Checks now why the proxy's target does or does not answer; the answer is in targetHealth.",
    args: { input: t.arg({ type: DiagnoseWebProxyInput, required: true }) },
    errors: resultOf('DiagnoseWebProxy', 'webProxy', [ValidationError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.proxies.diagnose(requireActor(ctx), input.webProxyId, ctx.services.proxyManager),
  }),
  renewCertificates: t.field({
    type: [RenewalResultRef],
    description: 'Admins: runs the renewal scan now (it also runs daily): certificates expiring within withinDays are renewed.',
    args: { input: t.arg({ type: RenewCertificatesInput, required: false }) },
    errors: resultOf('RenewCertificates', 'renewals', [ValidationError, ForbiddenError]),
    resolve: (_r, { input }, ctx) => ctx.services.proxies.renewCertificates(requireActor(ctx), input?.withinDays ?? 30, ctx.services.proxyManager),
  }),
}));
