/**
 * Web proxy objects: a domain (exact or wildcard) served by the reverse proxy and sent to an
 * address and port of an instance the user owns, with a TLS mode. Per-user wildcard templates
 * (`*.user1.example.com`) give each of the user's instances a sub-domain. Caddy applies them
 * (see the reverse-proxy issue); this service keeps them valid, unique and owned.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { and, asc, count, eq, gt, inArray, like, ne, or, sql, type SQL } from 'drizzle-orm';
import { inject, injectable } from 'tsyringe';
import { isAdmin, type Actor } from '../auth/actor.js';
import type { Database, Executor } from '../db/database.js';
import { proxyDomainTemplates, webProxies, webProxyTraffic } from '../db/schema.js';
import type { ProxyManager, RenewalResult } from '../proxy/proxy-manager.js';
import { ConflictError, ForbiddenError, NotFoundError, QuotaExceededError, ValidationError, mapUniqueViolations } from '../support/errors.js';
import { newId } from '../support/ids.js';
import { domainCoveredBy, parseDomain, templateLabel, type Domain } from '../net/domain.js';
import { DatabaseToken } from '../di/tokens.js';
import { validId, validPort } from '../support/validate.js';
import { AuditService, type RecordChange, type Tx } from './audit-service.js';
import { instanceTarget, loadOwnedInstance, lockOwner } from './ownership.js';

/** A proxy row (the private key never leaves this service). */
export type WebProxy = typeof webProxies.$inferSelect;
/** Requests and bytes through a proxy. */
export type ProxyTraffic = Omit<typeof webProxyTraffic.$inferSelect, 'proxyId'>;
/** A wildcard template row. */
export type DomainTemplate = typeof proxyDomainTemplates.$inferSelect;
/** How the proxy gets its certificate. */
export type TlsMode = WebProxy['tlsMode'];

/** Input of `createWebProxy`. */
export interface CreateWebProxyInput {
  instanceId: string;
  domain: string;
  targetAddress?: string | null;
  targetPort: number;
  targetProtocol?: WebProxy['targetProtocol'] | null;
  /** Default: ACME for exact domains, self-signed for wildcards (wildcard ACME needs a DNS challenge). */
  tlsMode?: TlsMode | null;
  certificatePem?: string | null;
  privateKeyPem?: string | null;
  websocket?: boolean | null;
}

/** Input of `updateWebProxy`: absent or null fields keep their value. */
export interface UpdateWebProxyInput {
  webProxyId: string;
  domain?: string | null;
  /** Another address of the proxy's instance. */
  targetAddress?: string | null;
  targetPort?: number | null;
  targetProtocol?: WebProxy['targetProtocol'] | null;
  /** A new mode; UPLOADED needs a certificate and key unless the proxy has one already. */
  tlsMode?: TlsMode | null;
  certificatePem?: string | null;
  privateKeyPem?: string | null;
  websocket?: boolean | null;
}

/** What a checked uploaded certificate says about itself. */
export interface CertificateInfo {
  subject: string;
  issuer: string;
  validFrom: Date;
  validTo: Date;
}

const MAX_PEM = 64 * 1024;

/** Checks that a certificate and key parse, match, cover the domain and are valid now. */
export function checkUploadedCertificate(domain: Domain, certificatePem: string, privateKeyPem: string, now = new Date()): CertificateInfo {
  if (certificatePem.length > MAX_PEM) throw new ValidationError('input.certificatePem', `${certificatePem.length} characters`, 'is larger than 64 KiB');
  if (privateKeyPem.length > MAX_PEM) throw new ValidationError('input.privateKeyPem', '(hidden)', 'is larger than 64 KiB');
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certificatePem);
  } catch {
    throw new ValidationError('input.certificatePem', certificatePem.slice(0, 40), 'is not a PEM X.509 certificate');
  }
  let key: ReturnType<typeof createPrivateKey>;
  try {
    key = createPrivateKey(privateKeyPem);
  } catch {
    throw new ValidationError('input.privateKeyPem', '(hidden)', 'is not an unencrypted PEM private key');
  }
  if (!cert.checkPrivateKey(key)) throw new ValidationError('input.privateKeyPem', '(hidden)', 'does not match input.certificatePem');
  // a wildcard domain needs a certificate for the wildcard: probe with a name only it covers
  const probe = domain.wildcard ? `gatehouse-wildcard-probe${domain.name.slice(1)}` : domain.name;
  if (!cert.checkHost(probe, { wildcards: true })) throw new ValidationError('input.certificatePem', cert.subject, `does not cover the domain ${domain.name}`);
  const validFrom = new Date(cert.validFrom);
  const validTo = new Date(cert.validTo);
  if (validTo <= now) throw new ValidationError('input.certificatePem', cert.subject, `expired on ${validTo.toISOString()}`);
  if (validFrom > now) throw new ValidationError('input.certificatePem', cert.subject, `is not valid before ${validFrom.toISOString()}`);
  return { subject: cert.subject, issuer: cert.issuer, validFrom, validTo };
}

/**
 * The checks of a proxy's own fields, shared by create and update: the domain parses, the port is
 * one, the TLS mode suits the domain, and an uploaded certificate (only with UPLOADED) matches its
 * key and covers the domain. Returns the parsed domain, port and TLS mode (default: ACME for an
 * exact domain, self-signed for a wildcard).
 */
export function checkProxySpec(input: Pick<CreateWebProxyInput, 'domain' | 'targetPort' | 'tlsMode' | 'certificatePem' | 'privateKeyPem'>): {
  domain: Domain;
  targetPort: number;
  tlsMode: TlsMode;
} {
  const domain = validDomain('input.domain', input.domain);
  const targetPort = validPort('input.targetPort', input.targetPort);
  const tlsMode: TlsMode = input.tlsMode ?? (domain.wildcard ? 'self_signed' : 'acme');
  if (tlsMode === 'acme' && domain.wildcard) {
    throw new ValidationError('input.tlsMode', 'ACME', 'cannot issue a wildcard certificate here (that needs a DNS challenge); use SELF_SIGNED or UPLOADED');
  }
  const uploaded = input.certificatePem != null || input.privateKeyPem != null;
  if (tlsMode === 'uploaded') {
    if (input.certificatePem == null) throw new ValidationError('input.certificatePem', null, 'is required when input.tlsMode is UPLOADED');
    if (input.privateKeyPem == null) throw new ValidationError('input.privateKeyPem', null, 'is required when input.tlsMode is UPLOADED');
    checkUploadedCertificate(domain, input.certificatePem, input.privateKeyPem);
  } else if (uploaded) {
    throw new ValidationError(
      input.certificatePem != null ? 'input.certificatePem' : 'input.privateKeyPem',
      '(given)',
      'applies only when input.tlsMode is UPLOADED',
    );
  }
  return { domain, targetPort, tlsMode };
}

/** Parses a domain for a field, or throws VALIDATION_FAILED naming it. */
export function validDomain(field: string, text: string): Domain {
  const domain = parseDomain(text);
  if ('error' in domain) throw new ValidationError(field, text, domain.error);
  return domain;
}

@injectable()
export class WebProxyService {
  constructor(
    @inject(DatabaseToken) private readonly db: Database,
    @inject(AuditService) private readonly audit: AuditService,
  ) {}

  /** Creates a proxy for a domain; CONFLICT when the domain is taken or inside another user's template. */
  async create(actor: Actor, input: CreateWebProxyInput): Promise<WebProxy> {
    const { domain, targetPort, tlsMode } = checkProxySpec(input);
    return mapUniqueViolations(
      () =>
        this.audit.transact(actor, async (tx, record) => {
          const instance = await loadOwnedInstance(tx, actor, 'input.instanceId', input.instanceId);
          const owner = await lockOwner(tx, instance.ownerId);
          if (owner.quotaWebProxies !== null) {
            const [row] = await tx.select({ n: count() }).from(webProxies).where(eq(webProxies.ownerId, owner.id));
            if ((row?.n ?? 0) + 1 > owner.quotaWebProxies)
              throw new QuotaExceededError('quotaWebProxies', owner.quotaWebProxies, row?.n ?? 0, 'input.domain', domain.name);
          }
          await this.checkNotClaimedByOthers(tx, 'input.domain', domain.name, instance.ownerId);
          const target = await instanceTarget(tx, instance, 'input', input.targetAddress);
          const proxy: WebProxy = {
            id: newId(),
            ownerId: instance.ownerId,
            instanceId: instance.id,
            hostId: instance.hostId,
            domain: domain.name,
            targetAddressId: target.id,
            targetAddress: target.address,
            targetPort,
            targetProtocol: input.targetProtocol ?? 'http',
            tlsMode,
            certificatePem: tlsMode === 'uploaded' ? input.certificatePem! : null,
            privateKeyPem: tlsMode === 'uploaded' ? input.privateKeyPem! : null,
            websocket: input.websocket ?? true,
            status: 'pending',
            statusError: null,
            certIssuer: null,
            certNotAfter: null,
            certError: null,
            certCheckedAt: null,
            targetState: null,
            targetDetail: null,
            targetCheckedAt: null,
            createdAt: new Date(),
          };
          await tx.insert(webProxies).values(proxy);
          await record({ action: 'webProxy.create', objectType: 'WebProxy', objectId: proxy.id, ownerId: proxy.ownerId, after: redact(proxy) });
          record.proxyChanged({ kind: 'proxy', action: 'created', proxyId: proxy.id });
          return proxy;
        }),
      { web_proxies_domain_unique: () => new ConflictError('input.domain', domain.name, 'is already served by another proxy') },
    );
  }

  /**
   * Edits a proxy in place: the fields given are merged into the proxy and checked exactly as
   * `create` checks them (domain, port, TLS mode and certificate, the target an address of the
   * proxy's instance, the domain unclaimed by others and unique). The proxy is PENDING until the
   * reverse proxy serves the new version; certificate and target findings of the old one are cleared.
   */
  async update(actor: Actor, input: UpdateWebProxyInput): Promise<WebProxy> {
    const id = validId('input.webProxyId', input.webProxyId);
    const current = await this.get(actor, id);
    if (!current) throw new NotFoundError('input.webProxyId', id, 'web proxy');
    const tlsMode = input.tlsMode ?? current.tlsMode;
    // a proxy that stays UPLOADED keeps its certificate unless a new one is given
    const keepsCertificate = tlsMode === 'uploaded' && current.tlsMode === 'uploaded' && input.certificatePem == null && input.privateKeyPem == null;
    const merged: CreateWebProxyInput = {
      instanceId: current.instanceId,
      domain: input.domain ?? current.domain,
      targetPort: input.targetPort ?? current.targetPort,
      tlsMode,
      certificatePem: keepsCertificate ? current.certificatePem : input.certificatePem,
      privateKeyPem: keepsCertificate ? current.privateKeyPem : input.privateKeyPem,
    };
    const { domain, targetPort } = checkProxySpec(merged);
    return mapUniqueViolations(
      () =>
        this.audit.transact(actor, async (tx, record) => {
          const [before] = await tx.select().from(webProxies).where(eq(webProxies.id, id)).for('update');
          if (!before || (!isAdmin(actor) && before.ownerId !== actor.userId)) throw new NotFoundError('input.webProxyId', id, 'web proxy');
          const instance = await loadOwnedInstance(tx, actor, 'input.webProxyId', before.instanceId);
          if (domain.name !== before.domain) await this.checkNotClaimedByOthers(tx, 'input.domain', domain.name, before.ownerId);
          const target = await instanceTarget(tx, instance, 'input', input.targetAddress ?? before.targetAddress);
          const certificateChanged = domain.name !== before.domain || tlsMode !== before.tlsMode || merged.certificatePem !== before.certificatePem;
          const targetChanged = target.id !== before.targetAddressId || targetPort !== before.targetPort;
          const [after] = await tx
            .update(webProxies)
            .set({
              domain: domain.name,
              targetAddressId: target.id,
              targetAddress: target.address,
              targetPort,
              targetProtocol: input.targetProtocol ?? before.targetProtocol,
              tlsMode,
              certificatePem: tlsMode === 'uploaded' ? merged.certificatePem! : null,
              privateKeyPem: tlsMode === 'uploaded' ? merged.privateKeyPem! : null,
              websocket: input.websocket ?? before.websocket,
              status: 'pending',
              statusError: null,
              ...(certificateChanged ? { certIssuer: null, certNotAfter: null, certError: null, certCheckedAt: null } : {}),
              ...(targetChanged ? { targetState: null, targetDetail: null, targetCheckedAt: null } : {}),
            })
            .where(eq(webProxies.id, id))
            .returning();
          await record({ action: 'webProxy.update', objectType: 'WebProxy', objectId: id, ownerId: before.ownerId, before: redact(before), after: redact(after!) });
          record.proxyChanged({ kind: 'proxy', action: 'updated', proxyId: id });
          return after!;
        }),
      { web_proxies_domain_unique: () => new ConflictError('input.domain', domain.name, 'is already served by another proxy') },
    );
  }

  /** Deletes a proxy the actor owns (admins: any). */
  async delete(actor: Actor, proxyId: string): Promise<WebProxy> {
    const id = validId('input.webProxyId', proxyId);
    return this.audit.transact(actor, async (tx, record) => {
      const [proxy] = await tx.select().from(webProxies).where(eq(webProxies.id, id));
      if (!proxy || (!isAdmin(actor) && proxy.ownerId !== actor.userId)) throw new NotFoundError('input.webProxyId', id, 'web proxy');
      await tx.delete(webProxies).where(eq(webProxies.id, id));
      await record({ action: 'webProxy.delete', objectType: 'WebProxy', objectId: id, ownerId: proxy.ownerId, before: redact(proxy) });
      record.proxyChanged({ kind: 'proxy', action: 'deleted', proxyId: id });
      return proxy;
    });
  }

  /** Creates a wildcard template for the actor: `*.user1.example.com` gives each instance `<name>.user1.example.com`. */
  async createTemplate(
    actor: Actor,
    input: { pattern: string; targetPort: number; targetProtocol?: DomainTemplate['targetProtocol'] | null },
  ): Promise<DomainTemplate> {
    const domain = validDomain('input.pattern', input.pattern);
    if (!domain.wildcard) throw new ValidationError('input.pattern', input.pattern, 'must be a wildcard such as *.user1.example.com');
    const targetPort = validPort('input.targetPort', input.targetPort);
    return mapUniqueViolations(
      () =>
        this.audit.transact(actor, async (tx, record) => {
          await this.checkNotClaimedByOthers(tx, 'input.pattern', domain.name, actor.userId);
          const template: DomainTemplate = {
            id: newId(),
            ownerId: actor.userId,
            pattern: domain.name,
            targetPort,
            targetProtocol: input.targetProtocol ?? 'http',
            createdAt: new Date(),
          };
          await tx.insert(proxyDomainTemplates).values(template);
          await record({ action: 'proxyTemplate.create', objectType: 'ProxyDomainTemplate', objectId: template.id, ownerId: actor.userId, after: template });
          record.proxyChanged({ kind: 'template', action: 'created', templateId: template.id });
          return template;
        }),
      { proxy_domain_templates_pattern_unique: () => new ConflictError('input.pattern', domain.name, 'is already a template') },
    );
  }

  /** Deletes one of the actor's templates. */
  async deleteTemplate(actor: Actor, templateId: string): Promise<DomainTemplate> {
    const id = validId('input.templateId', templateId);
    return this.audit.transact(actor, async (tx, record) => {
      const [row] = await tx.select().from(proxyDomainTemplates).where(eq(proxyDomainTemplates.id, id));
      if (!row || (!isAdmin(actor) && row.ownerId !== actor.userId)) throw new NotFoundError('input.templateId', id, 'domain template');
      await tx.delete(proxyDomainTemplates).where(eq(proxyDomainTemplates.id, id));
      await record({ action: 'proxyTemplate.delete', objectType: 'ProxyDomainTemplate', objectId: id, ownerId: row.ownerId, before: row });
      record.proxyChanged({ kind: 'template', action: 'deleted', templateId: id });
      return row;
    });
  }

  /** The actor's templates (admins: all). */
  async templates(actor: Actor): Promise<DomainTemplate[]> {
    return this.db
      .select()
      .from(proxyDomainTemplates)
      .where(isAdmin(actor) ? undefined : eq(proxyDomainTemplates.ownerId, actor.userId))
      .orderBy(asc(proxyDomainTemplates.id));
  }

  /** The sub-domains an instance gets from its owner's templates: `<instance name>.<template suffix>`. */
  async templateDomainsOf(instance: { name: string; ownerId: string }): Promise<string[]> {
    const label = templateLabel(instance.name);
    if (!label) return [];
    const rows = await this.db.select().from(proxyDomainTemplates).where(eq(proxyDomainTemplates.ownerId, instance.ownerId));
    return rows.map((t) => `${label}${t.pattern.slice(1)}`);
  }

  /** A proxy, if the actor may see it. */
  async get(actor: Actor, id: string): Promise<WebProxy | undefined> {
    const [row] = await this.db.select().from(webProxies).where(eq(webProxies.id, id));
    return row && (isAdmin(actor) || row.ownerId === actor.userId) ? row : undefined;
  }

  /** Proxies the actor may see, in creation order. */
  async list(actor: Actor, filter: { instanceId?: string | null }, page: { after?: string; limit: number }): Promise<WebProxy[]> {
    return this.db
      .select()
      .from(webProxies)
      .where(and(this.listed(actor, filter), page.after ? gt(webProxies.id, page.after) : undefined))
      .orderBy(asc(webProxies.id))
      .limit(page.limit);
  }

  /** How many web proxies `list` returns over all its pages (one count query). */
  async count(actor: Actor, filter: { instanceId?: string | null }): Promise<number> {
    const [row] = await this.db.select({ n: count() }).from(webProxies).where(this.listed(actor, filter));
    return row?.n ?? 0;
  }

  private listed(actor: Actor, filter: { instanceId?: string | null }): SQL | undefined {
    return and(isAdmin(actor) ? undefined : eq(webProxies.ownerId, actor.userId), filter.instanceId ? eq(webProxies.instanceId, filter.instanceId) : undefined);
  }

  /** Requests and bytes through a proxy (zeros before its first request). */
  async traffic(proxyId: string): Promise<ProxyTraffic> {
    const [row] = await this.db.select().from(webProxyTraffic).where(eq(webProxyTraffic.proxyId, proxyId));
    return row ?? { requests: 0, bytesSent: 0, bytesReceived: 0, serverErrors: 0, lastRequestAt: null };
  }

  /** Diagnoses the target of a proxy the actor may see, now, and returns the proxy with the result. */
  async diagnose(actor: Actor, proxyId: string, manager: ProxyManager | undefined): Promise<WebProxy> {
    const id = validId('input.webProxyId', proxyId);
    if (!(await this.get(actor, id))) throw new NotFoundError('input.webProxyId', id, 'web proxy');
    if (!manager) throw new ValidationError('input.webProxyId', id, 'cannot be diagnosed: this controller runs no reverse proxy');
    await manager.diagnose(id);
    return (await this.get(actor, id))!;
  }

  /** The renewal scan, for admins. */
  async renewCertificates(actor: Actor, withinDays: number, manager: ProxyManager | undefined): Promise<RenewalResult[]> {
    if (!isAdmin(actor)) throw new ForbiddenError('renewCertificates requires an admin token');
    if (!Number.isInteger(withinDays) || withinDays < 1 || withinDays > 3650)
      throw new ValidationError('input.withinDays', withinDays, 'must be an integer from 1 to 3650');
    if (!manager) throw new ValidationError('input', null, 'cannot renew: this controller runs no reverse proxy');
    return manager.renewCertificates({ withinDays });
  }

  /** Removes the proxies that target the given addresses (NIC removed, instance deleted), with audit entries. */
  async removeForTargets(tx: Tx, record: RecordChange, allocationIds: readonly string[], reason: string): Promise<void> {
    if (allocationIds.length === 0) return;
    const rows = await tx
      .delete(webProxies)
      .where(inArray(webProxies.targetAddressId, [...allocationIds]))
      .returning();
    await record.many(
      rows.map((p) => ({ action: 'webProxy.delete', objectType: 'WebProxy', objectId: p.id, ownerId: p.ownerId, before: redact(p), after: { reason } })),
    );
    for (const p of rows) record.proxyChanged({ kind: 'proxy', action: 'deleted', proxyId: p.id });
  }

  /** Number of proxies targeting an address. */
  async countForTarget(tx: Executor, allocationId: string): Promise<number> {
    const [row] = await tx.select({ n: count() }).from(webProxies).where(eq(webProxies.targetAddressId, allocationId));
    return row?.n ?? 0;
  }

  /**
   * CONFLICT when another user holds a name that overlaps `domain`: a proxy or template of theirs
   * that this wildcard would cover, or a wildcard of theirs that covers this name (exact routes
   * win over wildcards in Caddy, so either way one user would take the other's traffic). The
   * refusal says that the name is taken, never which other name takes it. Creations of proxies
   * and templates are serialised by one transaction lock so that two overlapping claims cannot
   * both pass.
   */
  private async checkNotClaimedByOthers(tx: Executor, field: string, domain: string, ownerId: string): Promise<void> {
    await tx.execute(sql`select pg_advisory_xact_lock(hashtext('gatehouse.proxy-domains'))`);
    const base = domain.startsWith('*.') ? domain.slice(2) : domain;
    const parent = base.slice(base.indexOf('.') + 1);
    // names that could overlap: the wildcard one level up, this wildcard itself, and (for a wildcard) any one label below
    const overlapping = (column: typeof webProxies.domain | typeof proxyDomainTemplates.pattern) =>
      or(inArray(column, [`*.${parent}`, `*.${base}`, base]), domain.startsWith('*.') ? like(column, `%.${base}`) : undefined);
    const proxies = await tx
      .select({ name: webProxies.domain })
      .from(webProxies)
      .where(and(ne(webProxies.ownerId, ownerId), overlapping(webProxies.domain)));
    const templates = await tx
      .select({ name: proxyDomainTemplates.pattern })
      .from(proxyDomainTemplates)
      .where(and(ne(proxyDomainTemplates.ownerId, ownerId), overlapping(proxyDomainTemplates.pattern)));
    const clash = [...proxies, ...templates].find((o) => domainCoveredBy(o.name, domain) || domainCoveredBy(domain, o.name));
    if (clash) throw new ConflictError(field, domain, 'is taken: it overlaps a domain another user holds');
  }
}

/** A proxy without its private key, for audit entries and events. */
export function redact(proxy: WebProxy): Omit<WebProxy, 'privateKeyPem'> & { privateKeyPem: string | null } {
  return { ...proxy, privateKeyPem: proxy.privateKeyPem ? '(redacted)' : null };
}
