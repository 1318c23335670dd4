/**
 * The certificates Caddy serves: looked for over TLS after a site changes (until served, or the
 * wait ends), recorded in `certificateStatus`, and renewed by the renewal scan when they are due.
 */
import { eq, inArray, ne } from 'drizzle-orm';
import type { CaddyAdminClient } from 'caddy-api-client';
import type { Database } from '../db/database.js';
import { webProxies } from '../db/schema.js';
import type { Logger } from '../support/logger.js';
import { POLICIES_PATH, type ProxySettings, type ProxySite } from './caddy-routes.js';
import { certificateCovers, servedCertificate, sniFor, type ServedCertificate } from './certificates.js';

/** What the renewal scan did with one certificate. */
export interface RenewalResult {
  proxyId: string;
  domain: string;
  tlsMode: string;
  /** Expiry of the certificate served before the scan; null when none was served. */
  notAfterBefore: Date | null;
  /** ok: not due; renewed: a new certificate is served; failed: due but not renewed; upload_needed: an uploaded certificate is due. */
  outcome: 'ok' | 'renewed' | 'failed' | 'upload_needed';
  notAfterAfter: Date | null;
  detail: string;
}

/** Options of the certificate monitor. */
export interface CertificateMonitorOptions {
  settings: Pick<ProxySettings, 'listenHost' | 'httpsPort'>;
  /** How often a certificate still awaited is looked for (default 2 s), and for how long (default 10 min). */
  retryMs?: number;
  waitMs?: number;
  /** How close to expiry the renewal scan renews (default 30 days). */
  renewWithinDays?: number;
  /** The TLS policy applied for a proxy (from the config sync): a forced renewal goes through it. */
  appliedPolicy: (proxyId: string) => ProxySite['policy'];
}

/** A proxy whose certificate is looked at. */
export interface CertificateRow {
  id: string;
  domain: string;
  tlsMode: string;
}

/** One day in milliseconds (the renewal window is given in days, the scan runs daily). */
export const DAY_MS = 86_400_000;

/**
 * Whether a served certificate is due for renewal: none served, or expiring within `withinMs`.
 * Certificates of Caddy's internal CA (`self_signed`) live 12 hours and Caddy rotates them itself;
 * they are due only past two thirds of their lifetime (Caddy's own renewal point), i.e. when Caddy failed to.
 */
export function renewalDue(
  served: Pick<ServedCertificate, 'notBefore' | 'notAfter'> | undefined,
  tlsMode: string,
  withinMs: number,
  now = Date.now(),
): boolean {
  if (!served) return true;
  const remaining = served.notAfter.getTime() - now;
  const lifetime = served.notAfter.getTime() - served.notBefore.getTime();
  return tlsMode === 'self_signed' ? remaining < lifetime / 3 : remaining < withinMs;
}

/** One line on a scan's results: how many renewed, failed, to replace, not due. */
export function summariseRenewals(results: readonly RenewalResult[]): string {
  const n = (o: RenewalResult['outcome']) => results.filter((r) => r.outcome === o).length;
  return `${results.length} certificates: ${n('renewed')} renewed, ${n('failed')} failed, ${n('upload_needed')} uploaded ones to replace, ${n('ok')} not due`;
}

/** Looks at, records and renews the certificates Caddy serves for TLS proxies. */
export class CertificateMonitor {
  /** Proxies whose certificate is awaited, with when the wait started. */
  private pending = new Map<string, number>();
  private loop: Promise<void> | null = null;
  private stopped = false;
  /** Last TLS error Caddy logged per name. */
  private tlsErrors = new Map<string, string>();

  constructor(
    private readonly db: Database,
    private readonly logger: Logger,
    private readonly client: Pick<CaddyAdminClient, 'upsertById'>,
    private readonly options: CertificateMonitorOptions,
  ) {}

  /** Notes an issuance error Caddy logged for these names: it is the certificate's error until one is served. */
  noteTlsError(names: readonly string[], message: string): void {
    for (const name of names) this.tlsErrors.set(name, message);
  }

  /** Looks for these proxies' certificates every few seconds until Caddy serves them (or the wait ends). */
  await(proxyIds: readonly string[]): void {
    for (const id of proxyIds) this.pending.set(id, Date.now());
    if (this.pending.size === 0 || this.stopped) return;
    this.loop ??= (async () => {
      try {
        const retry = this.options.retryMs ?? 2000;
        const wait = this.options.waitMs ?? 600_000;
        while (this.pending.size > 0 && !this.stopped) {
          const rows = await this.db
            .select({ id: webProxies.id, domain: webProxies.domain, tlsMode: webProxies.tlsMode })
            .from(webProxies)
            .where(inArray(webProxies.id, [...this.pending.keys()]));
          const present = new Set(rows.map((r) => r.id));
          for (const id of this.pending.keys()) if (!present.has(id)) this.pending.delete(id);
          for (const row of rows) {
            const served = await this.check(row);
            if (served || Date.now() - this.pending.get(row.id)! > wait) this.pending.delete(row.id);
          }
          if (this.pending.size > 0) await new Promise((r) => setTimeout(r, retry).unref());
        }
      } finally {
        this.loop = null;
      }
    })().catch((err: unknown) => this.logger.error('proxy manager: certificate check failed', err));
  }

  /** Stops looking for awaited certificates; resolves when the look under way has ended. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop?.catch(() => undefined);
  }

  /** Records the certificate Caddy serves for a proxy (or why there is none); returns it when it covers the domain. */
  async check(row: CertificateRow): Promise<ServedCertificate | undefined> {
    let served: ServedCertificate | undefined;
    let problem: string | null = null;
    try {
      served = await servedCertificate(this.connectHost(), this.options.settings.httpsPort, sniFor(row.domain));
      if (!certificateCovers(served, row.domain)) problem = `the certificate served (${served.subjectAltName || served.subject}) does not cover ${row.domain}`;
    } catch (error) {
      problem = this.tlsErrors.get(row.domain) ?? `no certificate is served for ${row.domain} yet (${(error as Error).message})`;
    }
    await this.db
      .update(webProxies)
      .set({
        certIssuer: served && !problem ? served.issuer : null,
        certNotAfter: served && !problem ? served.notAfter : null,
        certError: problem,
        certCheckedAt: new Date(),
      })
      .where(eq(webProxies.id, row.id));
    return problem ? undefined : served;
  }

  /**
   * The renewal scan: every TLS proxy's served certificate is looked at; one due (see
   * `renewalDue`) is renewed by Caddy (its policy gets a renewal window covering it until the new
   * certificate is served), an uploaded one is reported for the owner to replace.
   */
  async renew(options: { withinDays?: number; waitMs?: number; onResult?: (r: RenewalResult) => void } = {}): Promise<RenewalResult[]> {
    const withinMs = (options.withinDays ?? this.options.renewWithinDays ?? 30) * DAY_MS;
    const rows = await this.db
      .select({ id: webProxies.id, domain: webProxies.domain, tlsMode: webProxies.tlsMode })
      .from(webProxies)
      .where(ne(webProxies.tlsMode, 'none'))
      .orderBy(webProxies.id);
    const results: RenewalResult[] = [];
    for (const row of rows) {
      const before = await this.check(row);
      const result: RenewalResult = {
        proxyId: row.id,
        domain: row.domain,
        tlsMode: row.tlsMode,
        notAfterBefore: before?.notAfter ?? null,
        outcome: 'ok',
        notAfterAfter: before?.notAfter ?? null,
        detail: '',
      };
      if (!renewalDue(before, row.tlsMode, withinMs)) {
        result.detail = `expires ${before!.notAfter.toISOString()}, not due`;
      } else if (row.tlsMode === 'uploaded') {
        result.outcome = 'upload_needed';
        result.detail = before
          ? `the uploaded certificate expires ${before.notAfter.toISOString()}: upload a new one`
          : 'the uploaded certificate is not served';
        await this.db.update(webProxies).set({ certError: result.detail }).where(eq(webProxies.id, row.id));
      } else {
        const after = await this.forceRenewal(row, before, options.waitMs ?? 120_000);
        result.outcome = after ? 'renewed' : 'failed';
        result.notAfterAfter = after?.notAfter ?? result.notAfterBefore;
        result.detail = after
          ? `renewed: now expires ${after.notAfter.toISOString()}`
          : (this.tlsErrors.get(row.domain) ?? `Caddy did not serve a new certificate for ${row.domain} in time`);
        if (!after) await this.db.update(webProxies).set({ certError: result.detail }).where(eq(webProxies.id, row.id));
      }
      options.onResult?.(result);
      results.push(result);
    }
    if (results.some((r) => r.outcome !== 'ok')) this.logger.info(`renewal scan: ${summariseRenewals(results)}`);
    return results;
  }

  /** Makes Caddy renew one name now: its policy's renewal window covers the certificate until a new one is served. */
  private async forceRenewal(row: CertificateRow, before: ServedCertificate | undefined, waitMs: number): Promise<ServedCertificate | undefined> {
    const policy = this.options.appliedPolicy(row.id);
    if (!policy) return undefined;
    this.tlsErrors.delete(row.domain);
    // a ratio just under 1: anything older than a fraction of a second is inside the window
    await this.client.upsertById(POLICIES_PATH, policy['@id'], { ...policy, renewal_window_ratio: 0.999999999 });
    try {
      const deadline = Date.now() + waitMs;
      while (Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 500).unref());
        const now = await this.check(row);
        if (now && (!before || now.serialNumber !== before.serialNumber)) return now;
      }
      return undefined;
    } finally {
      await this.client.upsertById(POLICIES_PATH, policy['@id'], policy);
    }
  }

  private connectHost(): string {
    const h = this.options.settings.listenHost;
    return h === '' || h === '0.0.0.0' ? '127.0.0.1' : h === '::' ? '::1' : h;
  }
}
