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
import type { EventBus, WebProxyChange } from '../events/event-bus.js';
import type { Logger } from '../support/logger.js';
import { statusBatches, type ObjectStatusChange } from '../events/event-payloads.js';
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
  /** How often a run reads every proxy again even without a notice saying so (default 60 s; a lost notice waits at most this long). */
  fullReadMs?: number;
  /** Called in each run with every proxy, as read from the database before Caddy is changed. */
  onProxies?: (rows: readonly ProxyRow[]) => void;
  /** Called after each run with the TLS proxies whose site is new or changed in Caddy (their certificate is to be looked for). */
  onTlsChanged?: (proxyIds: string[]) => void;
}

/** A site with its JSON (computed once per version, to compare with what was applied). */
interface SiteEntry {
  site: ProxySite;
  json: string;
}

interface ProxyEntry extends SiteEntry {
  row: ProxyRow;
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
  /** The database as last read: each proxy's row and site (in a stable order), the template sites; undefined: read it all. */
  private cache: { proxies: Map<string, ProxyEntry>; templates: SiteEntry[]; readAt: number } | undefined;
  /** Proxies a notice said changed since the last run read them; 'all': the next run reads everything. */
  private dirty: Set<string> | 'all' = 'all';
  /** Sends the changes; knows what Caddy holds. */
  readonly writer: CaddyWriter;
  private readonly runner = new CoalescingRunner(() =>
    this.syncOnce().catch((err: unknown) => {
      // what the failed run read or wrote is unsure: the next reads everything
      this.dirty = 'all';
      this.logger.error('proxy manager: sync failed', err);
    }),
  );

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
   * Brings Caddy up to date with the whole database. Concurrent calls share one run; a call made
   * while a run is under way gets a further run, so its change is included when it resolves.
   */
  sync(): Promise<void> {
    this.dirty = 'all';
    return this.runner.run();
  }

  /**
   * A change notice: a proxy's change makes the next run read only that proxy (as long as the
   * runs' reads since the last full one are whole); anything else (a template, an address) makes
   * it read everything. Resolves as `sync`.
   */
  changed(change: WebProxyChange): Promise<void> {
    if (change.kind === 'proxy' && this.dirty !== 'all') this.dirty.add(change.proxyId);
    else this.dirty = 'all';
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
      if (this.unreachable !== null || Date.now() - (this.cache?.readAt ?? 0) >= (this.options.fullReadMs ?? 60_000)) await this.sync();
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
    const dirty = this.dirty;
    this.dirty = new Set();
    let read: { rows: ProxyRow[]; sites: SiteEntry[] };
    try {
      read = await this.loadSites(dirty);
    } catch (error) {
      this.dirty = 'all';
      throw error;
    }
    const { rows, sites } = read;
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
  private async loadAll(entries: SiteEntry[]): Promise<void> {
    const sites = entries.map((e) => e.site);
    const { adminConfig: admin, settings } = this.options;
    this.refused.clear();
    try {
      this.writer.forget();
      await this.client.load(proxyConfig({ admin, settings, sites }));
      this.writer.loaded(siteObjects(sites));
      this.applied = new Map(entries.map((e) => [e.site.key, e]));
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
      for (const e of entries) this.refused.set(e.site.key, { json: e.json, message: `Caddy refused the proxy server: ${error.message}` });
      this.applied = undefined;
      return;
    }
    if (this.serverRefused !== null) this.logger.info('proxy manager: Caddy runs the proxy server now');
    this.serverRefused = null;
    this.applied = new Map();
    await this.applyChanges(entries);
  }

  /**
   * Applies the sites that differ from what was applied, all in one write; when Caddy refuses it,
   * one site at a time, so only the refused ones are FAILED (each keeps its previous version).
   */
  private async applyChanges(entries: SiteEntry[]): Promise<void> {
    const applied = this.applied!;
    const sites = entries.map((e) => e.site);
    const wanted = new Set(sites.map((s) => s.key));
    for (const key of applied.keys()) {
      if (wanted.has(key)) continue;
      applied.delete(key);
      this.refused.delete(key);
    }
    const changed: SiteEntry[] = [];
    for (const { site, json } of entries) {
      if (applied.get(site.key)?.json === json) this.refused.delete(site.key);
      else if (this.refused.get(site.key)?.json !== json) changed.push({ site, json });
    }
    /** The applied sites, with `extra`'s new versions, in the database's order. */
    const target = (extra: ReadonlyMap<string, ProxySite>) => siteObjects(sites.flatMap((s) => extra.get(s.key) ?? applied.get(s.key)?.site ?? []));
    const accept = ({ site, json }: SiteEntry) => {
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

  /**
   * Every proxy and template sub-domain as a site: `dirty` 'all' (or nothing read yet) reads the
   * database whole; otherwise only the proxies in `dirty` are read again (a deleted one is gone),
   * the rest comes from the last read. The proxies keep the order they were first read in, so a
   * full read after incremental ones changes no table's order.
   */
  private async loadSites(dirty: Set<string> | 'all'): Promise<{ rows: ProxyRow[]; sites: SiteEntry[] }> {
    let cache = this.cache;
    if (dirty === 'all' || cache === undefined) {
      const rows = await this.selectProxies();
      const fresh = new Map(rows.map((r) => [r.id, r]));
      const proxies = new Map<string, ProxyEntry>();
      for (const [id, old] of cache?.proxies ?? []) {
        const row = fresh.get(id);
        if (row) proxies.set(id, this.proxyEntry(row, old));
      }
      for (const row of rows) if (!proxies.has(row.id)) proxies.set(row.id, this.proxyEntry(row));
      cache = this.cache = { proxies, templates: await this.templateSites(), readAt: Date.now() };
    } else if (dirty.size > 0) {
      const ids = [...dirty];
      const rows: ProxyRow[] = [];
      for (let i = 0; i < ids.length; i += 1000) rows.push(...(await this.selectProxies(ids.slice(i, i + 1000))));
      const fresh = new Map(rows.map((r) => [r.id, r]));
      for (const id of ids) {
        const row = fresh.get(id);
        if (row) cache.proxies.set(id, this.proxyEntry(row, cache.proxies.get(id)));
        else cache.proxies.delete(id);
      }
    }
    const entries = [...cache.proxies.values()];
    // a domain with its own proxy is not a template's sub-domain
    const taken = new Set(entries.map((e) => e.row.domain));
    const templates = cache.templates.filter((t) => t.site.group !== 1 || !t.site.upstream || !taken.has(t.site.domain));
    return { rows: entries.map((e) => e.row), sites: [...entries, ...templates] };
  }

  /** A proxy's entry; the previous one's site when the site did not change. */
  private proxyEntry(row: ProxyRow, previous?: ProxyEntry): ProxyEntry {
    const site = proxySite(row, this.options.settings);
    const json = JSON.stringify(site);
    return previous?.json === json ? { row, site: previous.site, json: previous.json } : { row, site, json };
  }

  private async selectProxies(ids?: string[]): Promise<ProxyRow[]> {
    const query = this.db
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
      .from(webProxies);
    return ids === undefined ? query.orderBy(webProxies.id) : query.where(inArray(webProxies.id, ids));
  }

  /** The templates' sites: each one's wildcard policy, and a sub-domain per instance of its owner (the first template naming a domain has it). */
  private async templateSites(): Promise<SiteEntry[]> {
    const settings = this.options.settings;
    const sites: ProxySite[] = [];
    const taken = new Set<string>();
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
    return sites.map((site) => ({ site, json: JSON.stringify(site) }));
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
      if (row.status === status && row.statusError === error) continue;
      if (status === 'applied') applied.push(row.id);
      else await this.db.update(webProxies).set({ status, statusError: error }).where(eq(webProxies.id, row.id));
      change(row, status, error);
      // the rows are the sync's cache of the database: they now say what it says
      row.status = status;
      row.statusError = error;
    }
    for (let i = 0; i < applied.length; i += 1000) {
      await this.db
        .update(webProxies)
        .set({ status: 'applied', statusError: null })
        .where(inArray(webProxies.id, applied.slice(i, i + 1000)));
    }
    for (const batch of statusBatches(changes)) this.bus.publish('objectStatus', batch);
  }
}
