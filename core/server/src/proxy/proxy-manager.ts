/**
 * The controller's side of the reverse proxy, composed of four units (see README.md):
 *
 * - `CaddyConfigSync` keeps Caddy's config equal to the proxies and templates in the database;
 * - `CertificateMonitor` looks for, records and renews the certificates Caddy serves;
 * - `AccessLogMeter` counts requests per proxy from Caddy's access log;
 * - `TargetDiagnoser` says why a proxy's target does not answer.
 *
 * This class wires them together, hears of changes on the `webProxyChanged` topic (published by
 * the services after commit, on every replica) and runs the periodic work: the check for a lost
 * config, the traffic flush and the renewal scan.
 */
import { CaddyAdminClient, type CaddyAdminConfig, type CaddyAdminEndpoint } from 'caddy-api-client';
import type { Database } from '../db/database.js';
import type { EventBus } from '../events/event-bus.js';
import type { Logger } from '../support/logger.js';
import { AccessLogMeter } from './access-log-meter.js';
import { CaddyConfigSync } from './caddy-config-sync.js';
import type { ProxySettings } from './caddy-routes.js';
import { CertificateMonitor, DAY_MS, type RenewalResult } from './certificate-monitor.js';
import { TargetDiagnoser, type TargetDiagnosis } from './target-diagnosis.js';

export type { RenewalResult } from './certificate-monitor.js';
export type { TargetDiagnosis } from './target-diagnosis.js';

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

/** The reverse proxy's units, wired together and driven by change notices and timers. */
export class ProxyManager {
  readonly client: CaddyAdminClient;
  readonly configSync: CaddyConfigSync;
  readonly certificates: CertificateMonitor;
  readonly meter: AccessLogMeter;
  readonly diagnoser: TargetDiagnoser;
  private timers: NodeJS.Timeout[] = [];
  private unsubscribe: (() => void) | undefined;

  constructor(
    db: Database,
    private readonly bus: EventBus,
    private readonly logger: Logger,
    private readonly options: ProxyManagerOptions,
  ) {
    this.client = new CaddyAdminClient({ ...options.admin, timeoutMs: 10_000 });
    const settings: ProxySettings = { ...options.settings, ...(options.logSocketPath ? { logAddress: `unix/${options.logSocketPath}` } : {}) };
    this.diagnoser = new TargetDiagnoser(db, logger, { intervalMs: options.diagnoseIntervalMs, probeTimeoutMs: options.probeTimeoutMs });
    this.configSync = new CaddyConfigSync(db, bus, logger, this.client, {
      adminConfig: options.adminConfig,
      settings,
      restartCaddy: options.restartCaddy,
      refusedRetryMs: options.refusedRetryMs,
      onProxies: (rows) => this.meter.setProxies(rows),
      onTlsChanged: (ids) => this.certificates.await(ids),
    });
    this.certificates = new CertificateMonitor(db, logger, this.client, {
      settings,
      retryMs: options.certificateRetryMs,
      waitMs: options.certificateWaitMs,
      renewWithinDays: options.renewWithinDays,
      appliedPolicy: (id) => this.configSync.appliedPolicy(id),
    });
    this.meter = new AccessLogMeter(db, {
      onBadGateway: (id) => void this.diagnoser.diagnoseSoon(id),
      onTlsError: (names, message) => this.certificates.noteTlsError(names, message),
    });
  }

  /** Starts receiving logs and change notices, loads Caddy's config, and starts the periodic work. */
  async start(): Promise<void> {
    if (this.options.logSocketPath) await this.meter.listen(this.options.logSocketPath);
    const changes = this.bus.subscribe('webProxyChanged');
    this.unsubscribe = () => void changes.return(undefined);
    void (async () => {
      for await (const change of changes) {
        if (change.kind === 'proxy' && change.action === 'deleted') this.diagnoser.forget(change.proxyId);
        void this.configSync.changed(change);
      }
    })().catch((err: unknown) => this.logger.error('proxy manager: change stream ended', err));
    const every = (ms: number, fn: () => Promise<unknown>) => {
      const timer = setInterval(() => void fn().catch((err: unknown) => this.logger.error('proxy manager', err)), ms);
      timer.unref();
      this.timers.push(timer);
    };
    every(this.options.checkIntervalMs ?? 5000, () => this.configSync.check());
    every(this.options.trafficFlushMs ?? 5000, () => this.meter.flush());
    every(this.options.renewalScanMs ?? DAY_MS, () => this.certificates.renew());
    await this.sync();
  }

  /** Stops the periodic work and the units; the last traffic counts are written. */
  async stop(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    this.unsubscribe?.();
    await this.configSync.stop();
    await this.certificates.stop();
    await this.meter.flush().catch(() => undefined);
    await this.meter.close();
  }

  /** Brings Caddy up to date with the whole database; resolves after a run that started after this call. */
  sync(): Promise<void> {
    return this.configSync.sync();
  }

  /** Looks whether Caddy still has the config (it loses it on restart) and reloads it if not. */
  check(): Promise<void> {
    return this.configSync.check();
  }

  /** The renewal scan (see CertificateMonitor.renew). */
  renewCertificates(options: { withinDays?: number; waitMs?: number; onResult?: (r: RenewalResult) => void } = {}): Promise<RenewalResult[]> {
    return this.certificates.renew(options);
  }

  /** Diagnoses a proxy's target now (see TargetDiagnoser). */
  diagnose(proxyId: string): Promise<TargetDiagnosis | undefined> {
    return this.diagnoser.diagnose(proxyId);
  }
}
