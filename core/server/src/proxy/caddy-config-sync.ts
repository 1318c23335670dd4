/**
 * Keeps Caddy's config equal to the web proxies and domain templates in the database, through
 * Caddy's admin API only.
 *
 * - The whole config is loaded when the sync starts and whenever Caddy is found without it (Caddy
 *   restarted, or was replaced); nothing lives only in Caddy.
 * - After that, every run reads the database, compares each site with what was last applied, and
 *   sends what changed, all sites of the run together, as the few small patches `CaddyWriter`
 *   computes (one host table's route for a new exact domain; see caddy-routes.ts). Change notices
 *   may be lost or repeated without harm, and a burst of them costs two runs (CoalescingRunner).
 * - Caddy validates every change and keeps serving its previous config when it refuses one: then
 *   the run's sites are tried one at a time, the proxy whose change was refused is FAILED with
 *   Caddy's message, the others are unaffected.
 * - When Caddy refuses even the bare proxy server (a port in use), every proxy is FAILED with its
 *   reason and the load is retried after `refusedRetryMs`, on a restarted Caddy when we run it.
 */
import { and, eq, inArray } from 'drizzle-orm';
import { CoalescingRunner } from '@gatehouse/sdk';
import { CaddyApiError, CaddyUnreachableError, isUnknownId, type CaddyAdminClient, type CaddyAdminConfig } from 'caddy-api-client';
import type { Database } from '../db/database.js';
import { instances, ipAllocations, nics, proxyDomainTemplates, webProxies } from '../db/schema.js';
import type { EventBus } from '../events/event-bus.js';
import type { Logger } from '../support/logger.js';
import type { ObjectStatusChange } from '../events/event-payloads.js';
import { templateLabel } from '../net/domain.js';
import { SERVER_ID, proxyConfig, proxyRouteId, proxySite, siteObjects, siteRouting, type ProxySettings, type ProxySite } from './caddy-routes.js';
import { CaddyWriter, type CaddyWriteClient } from './caddy-writer.js';

/** The part of Caddy's admin client the sync uses (a fake in unit tests). */
export type CaddyConfigClient = Pick<CaddyAdminClient, 'load' | 'getById'> & CaddyWriteClient;

/** A proxy as the sync needs it. */
export type ProxyRow = Pick<
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

/** Options of the config sync. */
export interface CaddyConfigSyncOptions {
  /** The admin section every config keeps, so a load never moves or opens the admin endpoint. */
  adminConfig: CaddyAdminConfig;
  settings: ProxySettings;
  /** Restarts the Caddy process when this controller runs it (see ProxyManagerOptions.restartCaddy). */
  restartCaddy?: () => Promise<void>;
  /** How long to wait before loading again after Caddy refused the bare proxy server (default 30 s). */
  refusedRetryMs?: number;
  /** Called in each run with every proxy, as read from the database before Caddy is changed. */
  onProxies?: (rows: readonly ProxyRow[]) => void;
  /** Called after each run with the TLS proxies whose site is new or changed in Caddy (their certificate is to be looked for). */
  onTlsChanged?: (proxyIds: string[]) => void;
}

/** Rebuilds Caddy's config from the database, on request and when Caddy lost it. */
export class CaddyConfigSync {
  /** The sites as last applied (by key), and their JSON for comparison; undefined: load everything next time. */
  private applied: Map<string, { site: ProxySite; json: string }> | undefined;
  /** Sites Caddy refused, with the JSON refused and Caddy's message: not retried until they change. */
  private refused = new Map<string, { json: string; message: string }>();
  private unreachable: string | null = null;
  /** Why Caddy refused even the bare proxy server (a port in use …); null when it runs it. */
  private serverRefused: string | null = null;
  private serverRefusedAt = 0;
  /** Sends the changes; knows what Caddy holds. */
  readonly writer: CaddyWriter;
  private readonly runner = new CoalescingRunner(() => this.syncOnce().catch((err: unknown) => this.logger.error('proxy manager: sync failed', err)));

  constructor(
    private readonly db: Database,
    private readonly bus: EventBus,
    private readonly logger: Logger,
    private readonly client: CaddyConfigClient,
    private readonly options: CaddyConfigSyncOptions,
  ) {
    this.writer = new CaddyWriter(client);
  }

  /**
   * Brings Caddy up to date with the database. Concurrent calls share one run; a call made while
   * a run is under way gets a further run, so its change is included when it resolves.
   */
  sync(): Promise<void> {
    return this.runner.run();
  }

  /** Starts no further run; resolves when the one under way has ended. */
  stop(): Promise<void> {
    return this.runner.stop();
  }

  /** The TLS automation policy applied for a proxy, if any (the certificate monitor forces renewals through it). */
  appliedPolicy(proxyId: string): ProxySite['policy'] {
    return this.applied?.get(proxyRouteId(proxyId))?.site.policy;
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
    this.options.onProxies?.(rows);
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
    const changedTls: string[] = [];
    for (const row of rows) {
      if (row.tlsMode === 'none' || this.applied === undefined) continue;
      const now = this.applied.get(proxyRouteId(row.id))?.json;
      if (now !== undefined && before.get(proxyRouteId(row.id))?.json !== now) changedTls.push(row.id);
    }
    if (changedTls.length > 0) this.options.onTlsChanged?.(changedTls);
  }

  /** Loads the whole config; when Caddy refuses it, loads the bare server and adds sites one by one. */
  private async loadAll(sites: ProxySite[]): Promise<void> {
    const { adminConfig: admin, settings } = this.options;
    this.refused.clear();
    try {
      this.writer.forget();
      await this.client.load(proxyConfig({ admin, settings, sites }));
      this.writer.loaded(siteObjects(sites));
      this.applied = new Map(sites.map((s) => [s.key, { site: s, json: JSON.stringify(s) }]));
      if (this.serverRefused !== null) this.logger.info('proxy manager: Caddy runs the proxy server now');
      this.serverRefused = null;
      return;
    } catch (error) {
      if (!(error instanceof CaddyApiError)) throw error;
      if (this.serverRefused === null) this.logger.warn(`proxy manager: Caddy refused the whole config (${error.message}); adding proxies one at a time`);
    }
    try {
      await this.client.load(proxyConfig({ admin, settings, sites: [] }));
      this.writer.loaded(siteObjects([]));
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

  /**
   * Applies the sites that differ from what was applied, all in one write; when Caddy refuses it,
   * one site at a time, so only the refused ones are FAILED (each keeps its previous version).
   */
  private async applyChanges(sites: ProxySite[]): Promise<void> {
    const applied = this.applied!;
    const wanted = new Set(sites.map((s) => s.key));
    for (const key of applied.keys()) {
      if (wanted.has(key)) continue;
      applied.delete(key);
      this.refused.delete(key);
    }
    const changed: { site: ProxySite; json: string }[] = [];
    for (const site of sites) {
      const json = JSON.stringify(site);
      if (applied.get(site.key)?.json === json) this.refused.delete(site.key);
      else if (this.refused.get(site.key)?.json !== json) changed.push({ site, json });
    }
    /** The applied sites, with `extra`'s new versions, in the database's order. */
    const target = (extra: ReadonlyMap<string, ProxySite>) =>
      siteObjects(sites.flatMap((s) => extra.get(s.key) ?? applied.get(s.key)?.site ?? []));
    const accept = ({ site, json }: { site: ProxySite; json: string }) => {
      applied.set(site.key, { site, json });
      this.refused.delete(site.key);
    };
    try {
      await this.writer.write(target(new Map(changed.map((c) => [c.site.key, c.site]))));
      changed.forEach(accept);
      return;
    } catch (error) {
      if (!(error instanceof CaddyApiError) || changed.length === 0) throw error;
      if (isUnknownId(error as unknown)) {
        // Caddy does not hold what the writer remembers (replaced behind our back): load it all again
        this.logger.warn(`proxy manager: Caddy's config is not what was applied (${error.message}); loading it from the database`);
        this.applied = undefined;
        void this.sync();
        return;
      }
      if (changed.length > 1) this.logger.warn(`proxy manager: Caddy refused ${changed.length} changes at once (${error.message}); trying them one at a time`);
    }
    for (const c of changed) {
      try {
        await this.writer.write(target(new Map([[c.site.key, c.site]])));
        accept(c);
      } catch (error) {
        if (!(error instanceof CaddyApiError)) throw error;
        this.refused.set(c.site.key, { json: c.json, message: error.message });
        this.logger.warn(`proxy manager: Caddy refused ${c.site.domain}: ${error.message}`);
      }
    }
    // a refused write may have been partly applied: Caddy is brought back to the accepted sites
    await this.writer.write(target(new Map()));
  }

  /** Every proxy and template sub-domain as a site, from the database. */
  private async loadSites(): Promise<{ rows: ProxyRow[]; sites: ProxySite[] }> {
    const settings = this.options.settings;
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
    const sites = rows.map((r) => proxySite(r, settings));
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
          settings,
          1,
        );
        sites.push({ key: `gh-tpl-${template.id}`, group: 1, domain: template.pattern, policy: tls.policy, automate: tls.automate });
        for (const t of first.values()) {
          const label = t.ownerId === template.ownerId ? templateLabel(t.name) : '';
          const domain = `${label}${suffix}`;
          if (!label || taken.has(domain)) continue;
          taken.add(domain);
          const id = `tpl-${template.id}-${t.instanceId}`;
          const spec = { id, domain, targetAddress: t.address, targetPort: template.targetPort, targetProtocol: template.targetProtocol, websocket: true };
          sites.push({ key: proxyRouteId(id), group: 1, domain, ...siteRouting({ ...spec, redirectToHttpsPort: settings.httpsPort }, 1) });
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
      const key = proxyRouteId(row.id);
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
}
