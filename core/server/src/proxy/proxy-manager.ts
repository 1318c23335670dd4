/**
 * The controller's side of the reverse proxy: keeps Caddy's config equal to the web proxies and
 * domain templates in the database, through Caddy's admin API only.
 *
 * - The whole config is loaded from the database when the manager starts and whenever Caddy is
 *   found without it (Caddy restarted, or was replaced); nothing lives only in Caddy.
 * - After that, a change to one proxy touches only its own objects (route, policy or certificate,
 *   upserted by `@id`; see caddy-routes.ts). Every sync reads the database and compares each
 *   site with what was last applied, so events may be lost or repeated without harm.
 * - Caddy validates every change and keeps serving its previous config when it refuses one: the
 *   proxy whose change was refused is FAILED with Caddy's message, the others are unaffected.
 * - Caddy's access log and TLS errors arrive on a unix socket: requests and bytes per proxy are
 *   added up and flushed to `web_proxy_traffic`; a 502 starts a diagnosis of the target
 *   (instance stopped, connection refused, timeout, TLS mismatch); an issuance error becomes the
 *   proxy's certificate error.
 * - The certificate Caddy serves is checked over TLS after each change and by the renewal scan.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { rmSync } from 'node:fs';
import { and, eq, inArray, isNotNull, ne, or, sql } from 'drizzle-orm';
import { CaddyAdminClient, CaddyApiError, CaddyUnreachableError, isUnknownId, type CaddyAdminConfig, type CaddyAdminEndpoint } from 'caddy-api-client';
import type { Database } from '../db/database.js';
import { hostAgents, instances, ipAllocations, nics, proxyDomainTemplates, webProxies, webProxyTraffic } from '../db/schema.js';
import type { EventBus } from '../events/event-bus.js';
import type { ObjectStatusChange } from '../events/event-payloads.js';
import type { Logger } from '../support/logger.js';
import { templateLabel } from '../net/domain.js';
import { certificateCovers, servedCertificate, sniFor, type ServedCertificate } from './certificates.js';
import {
  ACCESS_LOGGER,
  AUTOMATE_PATH,
  LOAD_PEM_PATH,
  POLICIES_PATH,
  ROUTES_PATH,
  SERVER_ID,
  routePosition,
  proxyConfig,
  proxyRoute,
  proxySite,
  type ProxySettings,
  type ProxySite,
} from './caddy-routes.js';
import { probeTarget, type ProbeResult } from './probe.js';

/** Options of the proxy manager. */
export interface ProxyManagerOptions {
  /** How to reach Caddy's admin API (a unix socket, or loopback TCP with origin enforcement). */
  admin: CaddyAdminEndpoint;
  /** The admin section every config keeps, so a load never moves or opens the admin endpoint. */
  adminConfig: CaddyAdminConfig;
  settings: Omit<ProxySettings, 'logAddress'>;
  /** Unix socket on which the controller receives Caddy's access and TLS logs; absent: no traffic counts. */
  logSocketPath?: string;
  /** How often Caddy is checked for a lost config (default 5 s). */
  checkIntervalMs?: number;
  /** How often traffic counts are written to the database (default 5 s). */
  trafficFlushMs?: number;
  /** How often a certificate still awaited is looked for (default 2 s), and for how long (default 10 min). */
  certificateRetryMs?: number;
  certificateWaitMs?: number;
  /** How often the renewal scan runs (default daily) and how close to expiry it renews (default 30 days). */
  renewalScanMs?: number;
  renewWithinDays?: number;
  /** Least time between two diagnoses of one proxy's target after 502s (default 10 s). */
  diagnoseIntervalMs?: number;
  /** Probe timeout for a target (default 3 s). */
  probeTimeoutMs?: number;
  /**
   * Restarts the Caddy process, when this controller runs it. Caddy 2.6.2 keeps the listeners a
   * refused config had already opened (a start that failed on a port in use leaves the others
   * open, answering every request with an empty 200): after such a refusal the manager restarts
   * Caddy, so the next attempt starts clean.
   */
  restartCaddy?: () => Promise<void>;
  /** How long to wait before loading again after Caddy refused the bare proxy server (default 30 s). */
  refusedRetryMs?: number;
}

/** Audit object types whose changes can change Caddy's config. */
const RELEVANT = new Set(['WebProxy', 'ProxyDomainTemplate', 'Instance', 'Nic', 'IpAddress']);

/** A proxy as the manager needs it. */
type ProxyRow = Pick<
  typeof webProxies.$inferSelect,
  | 'id'
  | 'ownerId'
  | 'hostId'
  | 'domain'
  | 'instanceId'
  | 'targetAddress'
  | 'targetPort'
  | 'targetProtocol'
  | 'tlsMode'
  | 'certificatePem'
  | 'privateKeyPem'
  | 'websocket'
  | 'status'
  | 'statusError'
>;

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

/** The diagnosis of a proxy's target, as stored. */
export interface TargetDiagnosis {
  state: ProbeResult['state'] | 'instance_stopped';
  detail: string;
  checkedAt: Date;
}

interface TrafficCount {
  requests: number;
  bytesSent: number;
  bytesReceived: number;
  serverErrors: number;
  last: Date;
}

const DAY_MS = 86_400_000;

export class ProxyManager {
  readonly client: CaddyAdminClient;
  private readonly settings: ProxySettings;
  /** The sites as last applied (by key), and their JSON for comparison; undefined: load everything next time. */
  private applied: Map<string, { site: ProxySite; json: string }> | undefined;
  /** Sites Caddy refused, with the JSON refused and Caddy's message: not retried until they change. */
  private refused = new Map<string, { json: string; message: string }>();
  private unreachable: string | null = null;
  /** Why Caddy refused even the bare proxy server (a port in use …); null when it runs it. */
  private serverRefused: string | null = null;
  private serverRefusedAt = 0;
  private dirty = false;
  private loop: Promise<void> | null = null;
  private stopped = false;
  private timers: NodeJS.Timeout[] = [];
  private unsubscribe: (() => void) | undefined;
  private logServer: Server | undefined;
  private logSockets = new Set<Socket>();
  private traffic = new Map<string, TrafficCount>();
  /** Domain → proxy id, rebuilt on each sync, for the access log. */
  private domains = new Map<string, string>();
  /** Proxies whose certificate is awaited, with when the wait started. */
  private certPending = new Map<string, number>();
  private certLoop: Promise<void> | null = null;
  /** Last TLS error Caddy logged per name. */
  private tlsErrors = new Map<string, string>();
  private lastDiagnosis = new Map<string, number>();

  constructor(
    private readonly db: Database,
    private readonly bus: EventBus,
    private readonly logger: Logger,
    private readonly options: ProxyManagerOptions,
  ) {
    this.client = new CaddyAdminClient({ ...options.admin, timeoutMs: 10_000 });
    this.settings = { ...options.settings, ...(options.logSocketPath ? { logAddress: `unix/${options.logSocketPath}` } : {}) };
  }

  /** Starts receiving logs and events, loads Caddy's config, and starts the periodic checks. */
  async start(): Promise<void> {
    if (this.options.logSocketPath) await this.listenForLogs(this.options.logSocketPath);
    const events = this.bus.subscribe('audit');
    this.unsubscribe = () => void events.return(undefined);
    void (async () => {
      for await (const entry of events) if (RELEVANT.has(entry.objectType)) void this.sync();
    })().catch((err: unknown) => this.logger.error('proxy manager: event stream ended', err));
    const every = (ms: number, fn: () => Promise<unknown>) => {
      const timer = setInterval(() => void fn().catch((err: unknown) => this.logger.error('proxy manager', err)), ms);
      timer.unref();
      this.timers.push(timer);
    };
    every(this.options.checkIntervalMs ?? 5000, () => this.check());
    every(this.options.trafficFlushMs ?? 5000, () => this.flushTraffic());
    every(this.options.renewalScanMs ?? DAY_MS, () => this.renewCertificates());
    await this.sync();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    this.unsubscribe?.();
    await this.loop?.catch(() => undefined);
    await this.certLoop?.catch(() => undefined);
    await this.flushTraffic().catch(() => undefined);
    for (const s of this.logSockets) s.destroy();
    await new Promise<void>((resolve) => (this.logServer ? this.logServer.close(() => resolve()) : resolve()));
    if (this.options.logSocketPath) rmSync(this.options.logSocketPath, { force: true });
  }

  /**
   * Brings Caddy up to date with the database. Concurrent calls share one run; a call made while
   * a run is under way gets a further run, so its change is included when it resolves.
   */
  sync(): Promise<void> {
    this.dirty = true;
    this.loop ??= (async () => {
      try {
        while (this.dirty && !this.stopped) {
          this.dirty = false;
          await this.syncOnce().catch((err: unknown) => this.logger.error('proxy manager: sync failed', err));
        }
      } finally {
        this.loop = null;
      }
    })();
    return this.loop;
  }

  /** Looks whether Caddy still has the config (it loses it on restart) and reloads it if not. */
  async check(): Promise<void> {
    if (this.serverRefused !== null && Date.now() - this.serverRefusedAt < (this.options.refusedRetryMs ?? 30_000)) return;
    try {
      await this.client.getById(SERVER_ID);
      if (this.unreachable !== null) await this.sync();
    } catch (error) {
      if (isUnknownId(error) || error instanceof CaddyUnreachableError) {
        // (without a proxy server Caddy refused, there is no config to lose: that is retried quietly)
        if (isUnknownId(error) && this.serverRefused === null)
          this.logger.warn('proxy manager: Caddy has lost its config (restarted?); loading it from the database');
        this.applied = undefined;
        await this.sync();
      } else throw error;
    }
  }

  private async syncOnce(): Promise<void> {
    const { rows, sites } = await this.loadSites();
    this.domains = new Map(rows.map((r) => [r.domain, r.id]));
    const before = new Map(this.applied ?? []);
    try {
      if (this.applied === undefined) await this.loadAll(sites);
      else await this.applyChanges(sites);
      if (this.unreachable !== null) this.logger.info('proxy manager: Caddy is reachable again');
      this.unreachable = null;
    } catch (error) {
      if (!(error instanceof CaddyUnreachableError)) throw error;
      if (this.unreachable === null) this.logger.warn(`proxy manager: ${error.message}`);
      this.unreachable = `Caddy's admin API is unreachable: ${error.message}`;
      this.applied = undefined;
    }
    await this.recordStatuses(rows);
    // certificates of sites that are new or changed are looked for until Caddy serves them
    for (const row of rows) {
      if (row.tlsMode === 'none' || this.applied === undefined) continue;
      const now = this.applied.get(`gh-proxy-${row.id}`)?.json;
      if (now !== undefined && before.get(`gh-proxy-${row.id}`)?.json !== now) this.certPending.set(row.id, Date.now());
    }
    if (this.certPending.size > 0) this.watchCertificates();
  }

  /** Loads the whole config; when Caddy refuses it, loads the bare server and adds sites one by one. */
  private async loadAll(sites: ProxySite[]): Promise<void> {
    this.refused.clear();
    try {
      await this.client.load(proxyConfig({ admin: this.options.adminConfig, settings: this.settings, sites }));
      this.applied = new Map(sites.map((s) => [s.key, { site: s, json: JSON.stringify(s) }]));
      if (this.serverRefused !== null) this.logger.info('proxy manager: Caddy runs the proxy server now');
      this.serverRefused = null;
      return;
    } catch (error) {
      if (!(error instanceof CaddyApiError)) throw error;
      if (this.serverRefused === null) this.logger.warn(`proxy manager: Caddy refused the whole config (${error.message}); adding proxies one at a time`);
    }
    try {
      await this.client.load(proxyConfig({ admin: this.options.adminConfig, settings: this.settings, sites: [] }));
    } catch (error) {
      if (!(error instanceof CaddyApiError)) throw error;
      // the server itself cannot run (a port in use …): every proxy fails with Caddy's reason, and
      // the load is tried again at each check; said once per distinct reason
      if (this.serverRefused !== error.message) {
        this.logger.error(`proxy manager: Caddy cannot run the proxy server, web proxies are FAILED until it can: ${error.message}`);
      }
      this.serverRefused = error.message;
      this.serverRefusedAt = Date.now();
      // the refused start left listeners behind in this Caddy (see restartCaddy): a fresh one for the next attempt
      await this.options.restartCaddy?.().catch((err: unknown) => this.logger.error('proxy manager: restarting Caddy failed', err));
      for (const s of sites) this.refused.set(s.key, { json: JSON.stringify(s), message: `Caddy refused the proxy server: ${error.message}` });
      this.applied = undefined;
      return;
    }
    if (this.serverRefused !== null) this.logger.info('proxy manager: Caddy runs the proxy server now');
    this.serverRefused = null;
    this.applied = new Map();
    await this.applyChanges(sites);
  }

  /** Applies the sites that differ from what was applied; see caddy-routes.ts for the objects of a site. */
  private async applyChanges(sites: ProxySite[]): Promise<void> {
    const applied = this.applied!;
    const wanted = new Map(sites.map((s) => [s.key, s]));
    // 1. routes of sites that are gone
    for (const [key, { site }] of applied) {
      if (wanted.has(key)) continue;
      if (site.route) await this.deleteId(key);
      applied.delete(key);
      this.refused.delete(key);
    }
    // 2. new and changed sites; a refused one keeps its previous version
    const staleTls = new Set<string>();
    for (const site of sites) {
      const json = JSON.stringify(site);
      const previous = applied.get(site.key);
      if (previous?.json === json) {
        this.refused.delete(site.key);
        continue;
      }
      if (this.refused.get(site.key)?.json === json) continue;
      try {
        if (site.pem) await this.client.upsertById(LOAD_PEM_PATH, site.pem['@id'], site.pem);
        if (site.policy) await this.client.upsertById(POLICIES_PATH, site.policy['@id'], site.policy);
        if (site.route) await this.client.upsertById(ROUTES_PATH, site.key, site.route, { position: routePosition(site.group) });
        applied.set(site.key, { site, json });
        this.refused.delete(site.key);
        if (previous?.site.pem && previous.site.pem['@id'] !== site.pem?.['@id']) staleTls.add(previous.site.pem['@id']);
        if (previous?.site.policy && previous.site.policy['@id'] !== site.policy?.['@id']) staleTls.add(previous.site.policy['@id']);
      } catch (error) {
        if (!(error instanceof CaddyApiError)) throw error;
        this.refused.set(site.key, { json, message: error.message });
        this.logger.warn(`proxy manager: Caddy refused ${site.domain}: ${error.message}`);
      }
    }
    // 3. the names Caddy manages: only those whose policy is in place
    const automate = [...applied.values()].flatMap(({ site }) => (site.automate ? [site.automate] : []));
    const current = await this.client.getConfig<string[] | null>(AUTOMATE_PATH);
    // PUT creates (and fails on an existing key), PATCH replaces
    if (JSON.stringify(current.value ?? []) !== JSON.stringify(automate)) {
      if (current.value == null) await this.client.put(AUTOMATE_PATH, automate);
      else await this.client.patch(AUTOMATE_PATH, automate);
    }
    // 4. policies and certificates nothing uses any more (after automate no longer names them)
    const inUse = new Set([...applied.values()].flatMap(({ site }) => [site.pem?.['@id'], site.policy?.['@id']]));
    for (const key of [...wanted.keys()].filter((k) => !applied.has(k))) inUse.add(key);
    for (const id of staleTls) if (!inUse.has(id)) await this.deleteId(id);
    await this.deleteOrphanTls(inUse);
  }

  /** Removes policies and loaded certificates of this manager that no applied site uses. */
  private async deleteOrphanTls(inUse: Set<string | undefined>): Promise<void> {
    for (const path of [POLICIES_PATH, LOAD_PEM_PATH]) {
      const { value } = await this.client.getConfig<{ '@id'?: string }[] | null>(path);
      for (const item of value ?? []) {
        const id = item['@id'];
        if (id && /^gh-(tls|cert)-/.test(id) && !inUse.has(id)) await this.deleteId(id);
      }
    }
  }

  private async deleteId(id: string): Promise<void> {
    try {
      await this.client.deleteById(id);
    } catch (error) {
      if (!isUnknownId(error)) throw error;
    }
  }

  /** Every proxy and template sub-domain as a site, from the database. */
  private async loadSites(): Promise<{ rows: ProxyRow[]; sites: ProxySite[] }> {
    const rows: ProxyRow[] = await this.db
      .select({
        id: webProxies.id,
        ownerId: webProxies.ownerId,
        hostId: webProxies.hostId,
        domain: webProxies.domain,
        instanceId: webProxies.instanceId,
        targetAddress: webProxies.targetAddress,
        targetPort: webProxies.targetPort,
        targetProtocol: webProxies.targetProtocol,
        tlsMode: webProxies.tlsMode,
        certificatePem: webProxies.certificatePem,
        privateKeyPem: webProxies.privateKeyPem,
        websocket: webProxies.websocket,
        status: webProxies.status,
        statusError: webProxies.statusError,
      })
      .from(webProxies)
      .orderBy(webProxies.id);
    const sites = rows.map((r) => proxySite(r, this.settings));
    const taken = new Set(rows.map((r) => r.domain));
    const templates = await this.db.select().from(proxyDomainTemplates).orderBy(proxyDomainTemplates.id);
    if (templates.length > 0) {
      const owners = [...new Set(templates.map((t) => t.ownerId))];
      const targets = await this.db
        .select({
          instanceId: instances.id,
          name: instances.name,
          ownerId: instances.ownerId,
          address: ipAllocations.address,
          prefixLength: ipAllocations.prefixLength,
        })
        .from(instances)
        .innerJoin(nics, eq(nics.instanceId, instances.id))
        .innerJoin(ipAllocations, eq(ipAllocations.nicId, nics.id))
        .where(and(inArray(instances.ownerId, owners), inArray(ipAllocations.prefixLength, [32, 128])))
        .orderBy(instances.id, nics.id, ipAllocations.id);
      // each instance's first IPv4 address, else its first address (as for a proxy without targetAddress)
      const first = new Map<string, (typeof targets)[number]>();
      for (const t of targets) {
        const had = first.get(t.instanceId);
        if (!had || (had.prefixLength !== 32 && t.prefixLength === 32)) first.set(t.instanceId, t);
      }
      for (const template of templates) {
        const suffix = template.pattern.slice(1);
        const tls = proxySite(
          {
            id: `tpl-${template.id}`,
            domain: template.pattern,
            targetAddress: '0.0.0.0',
            targetPort: 1,
            targetProtocol: 'http',
            websocket: true,
            tlsMode: 'self_signed',
          },
          this.settings,
          1,
        );
        sites.push({ key: `gh-tpl-${template.id}`, group: 1, domain: template.pattern, policy: tls.policy, automate: tls.automate });
        for (const t of first.values()) {
          const label = t.ownerId === template.ownerId ? templateLabel(t.name) : '';
          const domain = `${label}${suffix}`;
          if (!label || taken.has(domain)) continue;
          taken.add(domain);
          const id = `tpl-${template.id}-${t.instanceId}`;
          sites.push({
            key: `gh-proxy-${id}`,
            group: 1,
            domain,
            route: proxyRoute({
              id,
              domain,
              targetAddress: t.address,
              targetPort: template.targetPort,
              targetProtocol: template.targetProtocol,
              websocket: true,
              redirectToHttpsPort: this.settings.httpsPort,
            }),
          });
        }
      }
    }
    return { rows, sites };
  }

  /** Writes APPLIED / FAILED (Caddy's message) / PENDING (Caddy unreachable) where it changed, and publishes each change (`objectStatusChanged`). */
  private async recordStatuses(rows: ProxyRow[]): Promise<void> {
    const applied: string[] = [];
    const changes: ObjectStatusChange[] = [];
    const change = (row: ProxyRow, status: ObjectStatusChange['status'], error: string | null) =>
      changes.push({ objectType: 'web_proxy', objectId: row.id, hostId: row.hostId, ownerId: row.ownerId, status, error, revision: 0 });
    for (const row of rows) {
      const key = `gh-proxy-${row.id}`;
      const refused = this.refused.get(key);
      // a refused change is FAILED even while the proxy's previous version keeps serving
      const [status, error] =
        this.unreachable !== null
          ? (['pending', this.unreachable] as const)
          : refused
            ? (['failed', refused.message] as const)
            : this.applied?.has(key)
              ? (['applied', null] as const)
              : (['pending', null] as const);
      if (status === 'applied' && error === null) {
        if (row.status !== 'applied' || row.statusError !== null) {
          applied.push(row.id);
          change(row, status, null);
        }
      } else if (row.status !== status || row.statusError !== error) {
        await this.db.update(webProxies).set({ status, statusError: error }).where(eq(webProxies.id, row.id));
        change(row, status, error);
      }
    }
    for (let i = 0; i < applied.length; i += 1000) {
      await this.db
        .update(webProxies)
        .set({ status: 'applied', statusError: null })
        .where(inArray(webProxies.id, applied.slice(i, i + 1000)));
    }
    for (const c of changes) this.bus.publish('objectStatus', c);
  }

  // ------------------------------------------------------------------------------------------
  // certificates

  private connectHost(): string {
    const h = this.settings.listenHost;
    return h === '' || h === '0.0.0.0' ? '127.0.0.1' : h === '::' ? '::1' : h;
  }

  /** Looks at the certificates still awaited every few seconds until Caddy serves them (or the wait ends). */
  private watchCertificates(): void {
    this.certLoop ??= (async () => {
      try {
        const retry = this.options.certificateRetryMs ?? 2000;
        const wait = this.options.certificateWaitMs ?? 600_000;
        while (this.certPending.size > 0 && !this.stopped) {
          const rows = await this.db
            .select({ id: webProxies.id, domain: webProxies.domain, tlsMode: webProxies.tlsMode })
            .from(webProxies)
            .where(inArray(webProxies.id, [...this.certPending.keys()]));
          const present = new Set(rows.map((r) => r.id));
          for (const id of this.certPending.keys()) if (!present.has(id)) this.certPending.delete(id);
          for (const row of rows) {
            const served = await this.checkCertificate(row);
            if (served || Date.now() - this.certPending.get(row.id)! > wait) this.certPending.delete(row.id);
          }
          if (this.certPending.size > 0) await new Promise((r) => setTimeout(r, retry).unref());
        }
      } finally {
        this.certLoop = null;
      }
    })().catch((err: unknown) => this.logger.error('proxy manager: certificate check failed', err));
  }

  /** Records the certificate Caddy serves for a proxy (or why there is none); returns it when it covers the domain. */
  async checkCertificate(row: { id: string; domain: string; tlsMode: string }): Promise<ServedCertificate | undefined> {
    let served: ServedCertificate | undefined;
    let problem: string | null = null;
    try {
      served = await servedCertificate(this.connectHost(), this.settings.httpsPort, sniFor(row.domain));
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
   * The renewal scan: every TLS proxy's served certificate is looked at; one expiring within
   * `withinDays` is renewed by Caddy (its policy gets a renewal window covering it until the new
   * certificate is served), an uploaded one is reported for the owner to replace. Certificates
   * of Caddy's internal CA live 12 hours and Caddy rotates them itself; they count as due only
   * past two thirds of their lifetime (Caddy's own renewal point), i.e. when Caddy failed to.
   */
  async renewCertificates(options: { withinDays?: number; waitMs?: number; onResult?: (r: RenewalResult) => void } = {}): Promise<RenewalResult[]> {
    const withinMs = (options.withinDays ?? this.options.renewWithinDays ?? 30) * DAY_MS;
    const rows = await this.db
      .select({ id: webProxies.id, domain: webProxies.domain, tlsMode: webProxies.tlsMode })
      .from(webProxies)
      .where(ne(webProxies.tlsMode, 'none'))
      .orderBy(webProxies.id);
    const results: RenewalResult[] = [];
    for (const row of rows) {
      const before = await this.checkCertificate(row);
      const result: RenewalResult = {
        proxyId: row.id,
        domain: row.domain,
        tlsMode: row.tlsMode,
        notAfterBefore: before?.notAfter ?? null,
        outcome: 'ok',
        notAfterAfter: before?.notAfter ?? null,
        detail: '',
      };
      const remaining = before ? before.notAfter.getTime() - Date.now() : -1;
      const lifetime = before ? before.notAfter.getTime() - before.notBefore.getTime() : 0;
      const due = !before || (row.tlsMode === 'self_signed' ? remaining < lifetime / 3 : remaining < withinMs);
      if (!due) {
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
    if (results.some((r) => r.outcome !== 'ok')) this.logger.info(`renewal scan: ${summarise(results)}`);
    return results;
  }

  /** Makes Caddy renew one name now: its policy's renewal window covers the certificate until a new one is served. */
  private async forceRenewal(
    row: { id: string; domain: string; tlsMode: string },
    before: ServedCertificate | undefined,
    waitMs: number,
  ): Promise<ServedCertificate | undefined> {
    const entry = this.applied?.get(`gh-proxy-${row.id}`);
    const policy = entry?.site.policy;
    if (!policy) return undefined;
    this.tlsErrors.delete(row.domain);
    // a ratio just under 1: anything older than a fraction of a second is inside the window
    await this.client.upsertById(POLICIES_PATH, policy['@id'], { ...policy, renewal_window_ratio: 0.999999999 });
    try {
      const deadline = Date.now() + waitMs;
      while (Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 500).unref());
        const now = await this.checkCertificate(row);
        if (now && (!before || now.serialNumber !== before.serialNumber)) return now;
      }
      return undefined;
    } finally {
      await this.client.upsertById(POLICIES_PATH, policy['@id'], policy);
    }
  }

  // ------------------------------------------------------------------------------------------
  // access log, traffic and target diagnosis

  private async listenForLogs(path: string): Promise<void> {
    rmSync(path, { force: true });
    this.logServer = createServer((socket) => {
      this.logSockets.add(socket);
      socket.once('close', () => this.logSockets.delete(socket));
      socket.on('error', () => socket.destroy());
      let buffered = '';
      socket.setEncoding('utf8');
      socket.on('data', (chunk: string) => {
        buffered += chunk;
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          if (line) this.onLogLine(line);
        }
        if (buffered.length > 1 << 20) buffered = ''; // a line over 1 MiB is not Caddy's
      });
    });
    await new Promise<void>((resolve, reject) => {
      this.logServer!.once('error', reject);
      this.logServer!.listen(path, () => resolve());
    });
  }

  /** One JSON line of Caddy's log. */
  onLogLine(line: string): void {
    let entry: Record<string, unknown>;
    try {
      entry = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    if (entry.logger === `http.log.access.${ACCESS_LOGGER}`) {
      const request = (entry.request ?? {}) as { host?: string };
      const host = (request.host ?? '').replace(/:\d+$/, '').replace(/\.$/, '').toLowerCase();
      const proxyId = this.proxyOfHost(host);
      if (!proxyId) return;
      const status = Number(entry.status) || 0;
      const count = this.traffic.get(proxyId) ?? { requests: 0, bytesSent: 0, bytesReceived: 0, serverErrors: 0, last: new Date() };
      count.requests += 1;
      count.bytesSent += Number(entry.size) || 0;
      count.bytesReceived += Number(entry.bytes_read) || 0;
      if (status >= 500) count.serverErrors += 1;
      count.last = new Date(Number(entry.ts) * 1000 || Date.now());
      this.traffic.set(proxyId, count);
      if (status === 502) this.diagnoseSoon(proxyId);
    } else if (entry.level === 'error' && typeof entry.logger === 'string' && entry.logger.startsWith('tls')) {
      const names = [entry.identifier, ...(Array.isArray(entry.identifiers) ? entry.identifiers : [])].filter((n): n is string => typeof n === 'string');
      const message = `${String(entry.msg ?? 'TLS error')}: ${String(entry.error ?? '')}`.slice(0, 2000);
      for (const name of names) this.tlsErrors.set(name, message);
    }
  }

  private proxyOfHost(host: string): string | undefined {
    return this.domains.get(host) ?? (host.includes('.') ? this.domains.get(`*${host.slice(host.indexOf('.'))}`) : undefined);
  }

  /** Adds the counts gathered since the last flush to the database. */
  async flushTraffic(): Promise<void> {
    if (this.traffic.size === 0) return;
    const counts = [...this.traffic];
    this.traffic.clear();
    // proxies deleted meanwhile are left out (their row would violate the foreign key)
    const existing = new Set(
      (
        await this.db
          .select({ id: webProxies.id })
          .from(webProxies)
          .where(
            inArray(
              webProxies.id,
              counts.map(([id]) => id),
            ),
          )
      ).map((r) => r.id),
    );
    const values = counts.filter(([id]) => existing.has(id)).map(([proxyId, c]) => ({ proxyId, ...c, lastRequestAt: c.last }));
    if (values.length === 0) return;
    await this.db
      .insert(webProxyTraffic)
      .values(values.map(({ last: _last, ...v }) => v))
      .onConflictDoUpdate({
        target: webProxyTraffic.proxyId,
        set: {
          requests: sql`${webProxyTraffic.requests} + excluded.requests`,
          bytesSent: sql`${webProxyTraffic.bytesSent} + excluded.bytes_sent`,
          bytesReceived: sql`${webProxyTraffic.bytesReceived} + excluded.bytes_received`,
          serverErrors: sql`${webProxyTraffic.serverErrors} + excluded.server_errors`,
          lastRequestAt: sql`greatest(${webProxyTraffic.lastRequestAt}, excluded.last_request_at)`,
        },
      });
  }

  private diagnoseSoon(proxyId: string): void {
    const last = this.lastDiagnosis.get(proxyId) ?? 0;
    if (Date.now() - last < (this.options.diagnoseIntervalMs ?? 10_000)) return;
    this.lastDiagnosis.set(proxyId, Date.now());
    void this.diagnose(proxyId).catch((err: unknown) => this.logger.error('proxy manager: diagnosis failed', err));
  }

  /**
   * Why a proxy's target does (not) answer: its instance reported stopped by the host's agent, or
   * a probe from this machine (where Caddy runs) — refused, timeout, unreachable, TLS mismatch.
   */
  async diagnose(proxyId: string): Promise<TargetDiagnosis | undefined> {
    const [row] = await this.db
      .select({
        targetAddress: webProxies.targetAddress,
        targetPort: webProxies.targetPort,
        targetProtocol: webProxies.targetProtocol,
        hostId: webProxies.hostId,
        instanceName: instances.name,
        externalId: instances.externalId,
      })
      .from(webProxies)
      .innerJoin(instances, eq(instances.id, webProxies.instanceId))
      .where(eq(webProxies.id, proxyId));
    if (!row) return undefined;
    let diagnosis: TargetDiagnosis;
    const [agent] = await this.db
      .select({ discovered: hostAgents.discoveredInstances })
      .from(hostAgents)
      .where(and(eq(hostAgents.hostId, row.hostId), isNotNull(hostAgents.discoveredAt)));
    const seen = agent?.discovered.find((d) => (row.externalId ? d.externalId === row.externalId : d.name === row.instanceName));
    if (seen?.running === false) {
      diagnosis = { state: 'instance_stopped', detail: `instance "${row.instanceName}" is stopped (its host's agent reported it)`, checkedAt: new Date() };
    } else {
      const probe = await probeTarget(
        { address: row.targetAddress, port: row.targetPort, protocol: row.targetProtocol },
        { timeoutMs: this.options.probeTimeoutMs ?? 3000 },
      );
      diagnosis = { state: probe.state, detail: probe.detail, checkedAt: new Date() };
    }
    await this.db
      .update(webProxies)
      .set({ targetState: diagnosis.state, targetDetail: diagnosis.detail, targetCheckedAt: diagnosis.checkedAt })
      .where(eq(webProxies.id, proxyId));
    return diagnosis;
  }

  /** Proxies that are FAILED or waiting (for tests and the CLI). */
  async unsettled(): Promise<{ id: string; domain: string; status: string; statusError: string | null }[]> {
    return this.db
      .select({ id: webProxies.id, domain: webProxies.domain, status: webProxies.status, statusError: webProxies.statusError })
      .from(webProxies)
      .where(or(ne(webProxies.status, 'applied'), isNotNull(webProxies.statusError)));
  }
}

function summarise(results: RenewalResult[]): string {
  const n = (o: RenewalResult['outcome']) => results.filter((r) => r.outcome === o).length;
  return `${results.length} certificates: ${n('renewed')} renewed, ${n('failed')} failed, ${n('upload_needed')} uploaded ones to replace, ${n('ok')} not due`;
}
