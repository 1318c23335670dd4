/** Web proxy objects (domains served by the reverse proxy) and per-user wildcard templates. */
import { ConflictError, ForbiddenError, NotFoundError, QuotaExceededError, ValidationError } from '../../support/errors.js';
import { X509Certificate } from 'node:crypto';
import type { RenewalResult } from '../../proxy/proxy-manager.js';
import type { DomainTemplate, ProxyTraffic, WebProxy } from '../../services/web-proxy-service.js';
import { builder } from '../builder.js';
import { requireActor } from '../context.js';
import { countedConnectionOf, countedPageTypes } from '../counted-connection.js';
import { connectionComplexity, pageOf } from '../pagination.js';
import { InstanceRef } from './instances.js';
import { resultOf } from './mutation-result.js';
import { ApplyStatusEnum } from './apply-status.js';

const TargetProtocolEnum = builder.enumType('ProxyTargetProtocol', {
  description: 'How the proxy talks to the instance.',
  values: {
    HTTP: { value: 'http', description: 'Plain HTTP to the instance.' },
    HTTPS: { value: 'https', description: "TLS to the instance (its certificate is not verified: it is the tenant's own)." },
  } as const,
});
const TlsModeEnum = builder.enumType('TlsMode', {
  description: 'Where the certificate clients see comes from.',
  values: {
    NONE: { value: 'none', description: 'Plain HTTP, no TLS.' },
    SELF_SIGNED: { value: 'self_signed', description: "A certificate from the proxy's internal CA (browsers warn); works for wildcards." },
    UPLOADED: { value: 'uploaded', description: 'Your certificate and key (certificatePem, privateKeyPem); renew it yourself.' },
    ACME: { value: 'acme', description: "Let's Encrypt (or the configured ACME directory), renewed automatically; exact domains only." },
  } as const,
});

const CertificateRef = builder.objectRef<X509Certificate>('UploadedCertificate').implement({
  description: 'The certificate uploaded for a proxy (TLS mode UPLOADED), as parsed.',
  fields: (t) => ({
    subject: t.string({ description: 'Its subject, e.g. "CN=shop.example.com".', resolve: (c) => c.subject }),
    issuer: t.string({ description: 'Its issuer.', resolve: (c) => c.issuer }),
    subjectAltName: t.string({
      nullable: true,
      description: 'Its subject alternative names, e.g. "DNS:shop.example.com, DNS:www.shop.example.com"; null: none.',
      resolve: (c) => c.subjectAltName ?? null,
    }),
    validFrom: t.field({ type: 'DateTime', description: 'Not valid before.', resolve: (c) => new Date(c.validFrom) }),
    validTo: t.field({ type: 'DateTime', description: 'Not valid after: upload a new one before then.', resolve: (c) => new Date(c.validTo) }),
  }),
});

const TargetStateEnum = builder.enumType('ProxyTargetState', {
  description: "Why a proxy's target does or does not answer.",
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
  description: 'The certificate Caddy serves for a domain, as last checked over TLS.',
  fields: (t) => ({
    issuer: t.exposeString('certIssuer', { nullable: true, description: 'Issuer of the served certificate; null while none is served.' }),
    notAfter: t.expose('certNotAfter', { type: 'DateTime', nullable: true, description: 'Expiry of the served certificate; null while none is served.' }),
    lastError: t.exposeString('certError', {
      nullable: true,
      description: "Why no valid certificate is served (Caddy's issuance error), or that an uploaded one expires soon.",
    }),
    checkedAt: t.expose('certCheckedAt', { type: 'DateTime', nullable: true, description: 'When it was last checked; null: not yet.' }),
  }),
});

const TargetHealthRef = builder.objectRef<WebProxy>('ProxyTargetHealth').implement({
  description: "The last diagnosis of a proxy's target.",
  fields: (t) => ({
    state: t.field({ type: TargetStateEnum, description: 'The verdict.', resolve: (p) => p.targetState as never }),
    detail: t.string({ description: 'What was seen, e.g. "connect ECONNREFUSED 10.0.0.5:8080"; may be empty.', resolve: (p) => p.targetDetail ?? '' }),
    checkedAt: t.field({ type: 'DateTime', description: 'When the diagnosis ran.', resolve: (p) => p.targetCheckedAt! }),
  }),
});

const ProxyTrafficRef = builder.objectRef<ProxyTraffic>('ProxyTraffic').implement({
  description: 'Counters of requests through a proxy since it was created.',
  fields: (t) => ({
    requests: t.field({ type: 'BigInt', description: 'Requests served.', resolve: (c) => BigInt(c.requests) }),
    bytesSent: t.field({ type: 'BigInt', description: 'Response bodies sent to clients.', resolve: (c) => BigInt(c.bytesSent) }),
    bytesReceived: t.field({ type: 'BigInt', description: 'Request bodies received from clients.', resolve: (c) => BigInt(c.bytesReceived) }),
    serverErrors: t.field({ type: 'BigInt', description: 'Responses 500-599.', resolve: (c) => BigInt(c.serverErrors) }),
    lastRequestAt: t.expose('lastRequestAt', { type: 'DateTime', nullable: true, description: 'The latest request; null: none yet.' }),
  }),
});

const RenewalOutcomeEnum = builder.enumType('CertificateRenewalOutcome', {
  description: "What the renewal scan did with one proxy's certificate.",
  values: {
    OK: { value: 'ok', description: 'Not due: it expires later than withinDays.' },
    RENEWED: { value: 'renewed', description: 'A new certificate is served.' },
    FAILED: { value: 'failed', description: 'Due, but not renewed; detail says why.' },
    UPLOAD_NEEDED: { value: 'upload_needed', description: 'An uploaded certificate is due: upload a new one.' },
  } as const,
});

const RenewalResultRef = builder.objectRef<RenewalResult>('CertificateRenewal').implement({
  description: "One proxy's line in a renewal scan.",
  fields: (t) => ({
    webProxyId: t.id({ description: 'The proxy.', resolve: (r) => r.proxyId }),
    domain: t.exposeString('domain', { description: 'Its domain.' }),
    outcome: t.field({ type: RenewalOutcomeEnum, description: 'What happened.', resolve: (r) => r.outcome }),
    notAfterBefore: t.expose('notAfterBefore', {
      type: 'DateTime',
      nullable: true,
      description: 'Expiry of the certificate served before the scan; null: none was served.',
    }),
    notAfterAfter: t.expose('notAfterAfter', { type: 'DateTime', nullable: true, description: 'Expiry of the certificate served after the scan; null: none.' }),
    detail: t.exposeString('detail', { description: 'For people: what was done or went wrong.' }),
  }),
});

const WebProxyRef = builder.objectRef<WebProxy>('WebProxy').implement({
  description:
    'A domain served by the reverse proxy (Caddy) and forwarded to an instance, with TLS. The private key of an uploaded certificate is never returned.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'The web proxy id.' }),
    domain: t.exposeString('domain', { description: 'Lower-case ASCII (IDNs as punycode); `*.` for a wildcard.' }),
    instance: t.field({
      type: InstanceRef,
      description: 'The instance requests go to.',
      resolve: async (p, _a, ctx) => (await ctx.services.instances.get(requireActor(ctx), p.instanceId))!,
    }),
    targetAddress: t.exposeString('targetAddress', { description: 'The instance address requests go to, e.g. "10.0.0.5".' }),
    targetPort: t.exposeInt('targetPort', { description: 'The instance port requests go to, 1-65535.' }),
    targetProtocol: t.field({ type: TargetProtocolEnum, description: 'HTTP or HTTPS to the instance.', resolve: (p) => p.targetProtocol }),
    tlsMode: t.field({ type: TlsModeEnum, description: 'Where the certificate comes from.', resolve: (p) => p.tlsMode }),
    certificate: t.field({
      type: CertificateRef,
      nullable: true,
      description: 'The uploaded certificate (TLS mode UPLOADED); null otherwise.',
      resolve: (p) => (p.certificatePem ? new X509Certificate(p.certificatePem) : null),
    }),
    websocket: t.exposeBoolean('websocket', { description: 'Whether WebSocket upgrades pass through.' }),
    status: t.field({
      type: ApplyStatusEnum,
      description: 'APPLIED: Caddy serves it. FAILED: Caddy refused it (statusError has its message).',
      resolve: (p) => p.status,
    }),
    statusError: t.exposeString('statusError', { nullable: true, description: "FAILED: Caddy's message; null otherwise." }),
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
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When the proxy was created.' }),
  }),
});

const DomainTemplateRef = builder.objectRef<DomainTemplate>('ProxyDomainTemplate').implement({
  description:
    'A wildcard domain of yours: each of your instances is served at <instance name>.<rest of the pattern> (see Instance.templateDomains), on targetPort.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'The template id.' }),
    pattern: t.exposeString('pattern', { description: 'The wildcard, e.g. "*.user1.example.com".' }),
    targetPort: t.exposeInt('targetPort', { description: "The instances' port requests go to." }),
    targetProtocol: t.field({ type: TargetProtocolEnum, description: 'HTTP or HTTPS to the instances.', resolve: (p) => p.targetProtocol }),
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
    description: 'A web proxy by id; null when it does not exist or is not yours.',
    args: { id: t.arg.id({ required: true, description: 'The web proxy id.' }) },
    resolve: (_r, a, ctx) => ctx.services.proxies.get(requireActor(ctx), a.id),
  }),
  webProxies: t.connection(
    {
      type: WebProxyRef,
      description: 'Admins see every web proxy, users their own; oldest first.',
      args: { instanceId: t.arg.id({ required: false, description: 'Only the proxies to this instance.' }) },
      complexity: connectionComplexity,
      resolve: async (_r, args, ctx) => {
        const page = pageOf(args);
        const actor = requireActor(ctx);
        const filter = { instanceId: args.instanceId };
        return countedConnectionOf(await ctx.services.proxies.list(actor, filter, page), page, () => ctx.services.proxies.count(actor, filter));
      },
    },
    ...countedPageTypes('web proxies'),
  ),
  proxyDomainTemplates: t.field({
    type: [DomainTemplateRef],
    description: 'Your wildcard domain templates.',
    resolve: (_r, _a, ctx) => ctx.services.proxies.templates(requireActor(ctx)),
  }),
}));

const CreateWebProxyInput = builder.inputType('CreateWebProxyInput', {
  description: 'A domain to serve and the instance port behind it.',
  fields: (t) => ({
    instanceId: t.id({ required: true, description: 'The instance requests go to.' }),
    domain: t.string({
      required: true,
      description:
        "shop.example.com or *.example.com; IDNs and upper case are normalised. CONFLICT when another proxy serves it or it lies inside another user's template.",
    }),
    targetAddress: t.string({ description: 'An address of the instance. Absent: its first IPv4 address.' }),
    targetPort: t.int({ required: true, description: 'The instance port, 1-65535, e.g. 8080.' }),
    targetProtocol: t.field({ type: TargetProtocolEnum, description: 'Default HTTP.' }),
    tlsMode: t.field({ type: TlsModeEnum, description: 'Default ACME for exact domains, SELF_SIGNED for wildcards (ACME is refused for wildcards).' }),
    certificatePem: t.string({
      description: 'UPLOADED only: the certificate (chain) in PEM, at most 64 KiB; it must cover the domain and be valid now.',
    }),
    privateKeyPem: t.string({ description: 'UPLOADED only: the unencrypted private key in PEM, matching the certificate. Never returned.' }),
    websocket: t.boolean({ description: 'Pass WebSocket upgrades through. Default true.' }),
  }),
});

const UpdateWebProxyInput = builder.inputType('UpdateWebProxyInput', {
  description: 'The fields of a web proxy to change; absent or null fields keep their value. The result is checked exactly as createWebProxy checks a new proxy.',
  fields: (t) => ({
    webProxyId: t.id({ required: true, description: 'The web proxy.' }),
    domain: t.string({ description: "A new domain, e.g. shop.example.com. CONFLICT when another proxy serves it or it lies inside another user's template." }),
    targetAddress: t.string({ description: "Another address of the proxy's instance." }),
    targetPort: t.int({ description: 'The instance port, 1-65535.' }),
    targetProtocol: t.field({ type: TargetProtocolEnum, description: 'HTTP or HTTPS towards the instance.' }),
    tlsMode: t.field({ type: TlsModeEnum, description: 'A new TLS mode (ACME is refused for wildcards).' }),
    certificatePem: t.string({
      description: 'UPLOADED only: a new certificate (chain) in PEM; absent keeps the uploaded one when the proxy stays UPLOADED.',
    }),
    privateKeyPem: t.string({ description: 'UPLOADED only: the private key of the new certificate. Never returned.' }),
    websocket: t.boolean({ description: 'Pass WebSocket upgrades through.' }),
  }),
});

const DeleteWebProxyInput = builder.inputType('DeleteWebProxyInput', {
  description: 'Which web proxy to delete.',
  fields: (t) => ({ webProxyId: t.id({ required: true, description: 'The web proxy.' }) }),
});
const CreateProxyDomainTemplateInput = builder.inputType('CreateProxyDomainTemplateInput', {
  description: 'A wildcard domain under which each of your instances gets a sub-domain.',
  fields: (t) => ({
    pattern: t.string({ required: true, description: 'A wildcard, e.g. "*.user1.example.com"; CONFLICT when it is already a template.' }),
    targetPort: t.int({ required: true, description: "The instances' port, 1-65535." }),
    targetProtocol: t.field({ type: TargetProtocolEnum, description: 'Default HTTP.' }),
  }),
});
const DeleteProxyDomainTemplateInput = builder.inputType('DeleteProxyDomainTemplateInput', {
  description: 'Which template to delete.',
  fields: (t) => ({ templateId: t.id({ required: true, description: 'The template.' }) }),
});

builder.mutationFields((t) => ({
  createWebProxy: t.field({
    type: WebProxyRef,
    description: "Serves a domain through the reverse proxy to an instance of yours. QUOTA_EXCEEDED beyond the owner's quotaWebProxies.",
    args: { input: t.arg({ type: CreateWebProxyInput, required: true, description: 'The domain and target.' }) },
    errors: resultOf('CreateWebProxy', 'webProxy', [ValidationError, NotFoundError, ConflictError, QuotaExceededError]),
    resolve: (_r, { input }, ctx) => ctx.services.proxies.create(requireActor(ctx), input),
  }),
  updateWebProxy: t.field({
    type: WebProxyRef,
    description: 'Edits a web proxy in place (domain, target, TLS, WebSocket): same id, PENDING until the reverse proxy serves the new version.',
    args: { input: t.arg({ type: UpdateWebProxyInput, required: true, description: 'The web proxy and the fields to change.' }) },
    errors: resultOf('UpdateWebProxy', 'webProxy', [ValidationError, NotFoundError, ConflictError]),
    resolve: (_r, { input }, ctx) => ctx.services.proxies.update(requireActor(ctx), input),
  }),
  deleteWebProxy: t.field({
    type: WebProxyRef,
    description: 'Stops serving a domain and deletes the proxy.',
    args: { input: t.arg({ type: DeleteWebProxyInput, required: true, description: 'The web proxy.' }) },
    errors: resultOf('DeleteWebProxy', 'webProxy', [ValidationError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.proxies.delete(requireActor(ctx), input.webProxyId),
  }),
  createProxyDomainTemplate: t.field({
    type: DomainTemplateRef,
    description: 'Adds a wildcard domain template of yours.',
    args: { input: t.arg({ type: CreateProxyDomainTemplateInput, required: true, description: 'The template.' }) },
    errors: resultOf('CreateProxyDomainTemplate', 'template', [ValidationError, ConflictError]),
    resolve: (_r, { input }, ctx) => ctx.services.proxies.createTemplate(requireActor(ctx), input),
  }),
  deleteProxyDomainTemplate: t.field({
    type: DomainTemplateRef,
    description: 'Deletes a wildcard domain template of yours; its sub-domains are no longer served.',
    args: { input: t.arg({ type: DeleteProxyDomainTemplateInput, required: true, description: 'The template.' }) },
    errors: resultOf('DeleteProxyDomainTemplate', 'template', [ValidationError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.proxies.deleteTemplate(requireActor(ctx), input.templateId),
  }),
}));

const DiagnoseWebProxyInput = builder.inputType('DiagnoseWebProxyInput', {
  description: 'Which web proxy to diagnose.',
  fields: (t) => ({ webProxyId: t.id({ required: true, description: 'The web proxy.' }) }),
});
const RenewCertificatesInput = builder.inputType('RenewCertificatesInput', {
  description: 'Options of a renewal scan.',
  fields: (t) => ({ withinDays: t.int({ description: 'Renew certificates expiring within this many days (default 30, 1-3650).' }) }),
});

builder.mutationFields((t) => ({
  diagnoseWebProxy: t.field({
    type: WebProxyRef,
    description: "Checks now why the proxy's target does or does not answer; the answer is in targetHealth.",
    args: { input: t.arg({ type: DiagnoseWebProxyInput, required: true, description: 'The web proxy.' }) },
    errors: resultOf('DiagnoseWebProxy', 'webProxy', [ValidationError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.proxies.diagnose(requireActor(ctx), input.webProxyId, ctx.services.proxyManager),
  }),
  renewCertificates: t.field({
    type: [RenewalResultRef],
    description: 'Admins: runs the renewal scan now (it also runs daily): certificates expiring within withinDays are renewed.',
    args: { input: t.arg({ type: RenewCertificatesInput, required: false, description: 'Absent: the defaults.' }) },
    errors: resultOf('RenewCertificates', 'renewals', [ValidationError, ForbiddenError]),
    resolve: (_r, { input }, ctx) => ctx.services.proxies.renewCertificates(requireActor(ctx), input?.withinDays ?? 30, ctx.services.proxyManager),
  }),
}));
