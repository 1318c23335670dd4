/**
 * Caddy's access log and TLS errors, received as JSON lines on a unix socket: requests, bytes and
 * 5xx responses are added up per proxy (by Host) and flushed into `web_proxy_traffic`; a 502 and
 * a TLS issuance error are handed on (to the target diagnosis and the certificate monitor).
 */
import { createServer, type Server, type Socket } from 'node:net';
import { rmSync } from 'node:fs';
import { inArray, sql } from 'drizzle-orm';
import type { Database } from '../db/database.js';
import { webProxies, webProxyTraffic } from '../db/schema.js';
import { ACCESS_LOGGER } from './caddy-routes.js';

/** One line of Caddy's log that matters here. */
export type CaddyLogEvent =
  | { kind: 'access'; host: string; status: number; bytesSent: number; bytesReceived: number; at: Date }
  | { kind: 'tls_error'; names: string[]; message: string };

/** Requests and bytes through one proxy since the last flush. */
export interface TrafficCount {
  requests: number;
  bytesSent: number;
  bytesReceived: number;
  serverErrors: number;
  last: Date;
}

/** Reads one JSON line of Caddy's log: an access entry of our server (Host normalised) or a TLS error; anything else is undefined. */
export function parseCaddyLogLine(line: string, now = new Date()): CaddyLogEvent | undefined {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (entry === null || typeof entry !== 'object') return undefined;
  if (entry.logger === `http.log.access.${ACCESS_LOGGER}`) {
    const request = (entry.request ?? {}) as { host?: string };
    const host = String(request.host ?? '')
      .replace(/:\d+$/, '')
      .replace(/\.$/, '')
      .toLowerCase();
    const ts = Number(entry.ts) * 1000;
    return {
      kind: 'access',
      host,
      status: Number(entry.status) || 0,
      bytesSent: Number(entry.size) || 0,
      bytesReceived: Number(entry.bytes_read) || 0,
      at: ts ? new Date(ts) : now,
    };
  }
  if (entry.level === 'error' && typeof entry.logger === 'string' && entry.logger.startsWith('tls')) {
    const names = [entry.identifier, ...(Array.isArray(entry.identifiers) ? entry.identifiers : [])].filter((n): n is string => typeof n === 'string');
    return { kind: 'tls_error', names, message: `${String(entry.msg ?? 'TLS error')}: ${String(entry.error ?? '')}`.slice(0, 2000) };
  }
  return undefined;
}

/** The proxy serving a Host: its exact domain, else the wildcard one level up. */
export function proxyOfHost(domains: ReadonlyMap<string, string>, host: string): string | undefined {
  return domains.get(host) ?? (host.includes('.') ? domains.get(`*${host.slice(host.indexOf('.'))}`) : undefined);
}

/** Options of the access-log meter. */
export interface AccessLogMeterOptions {
  /** Called for each 502 a proxy answered. */
  onBadGateway?: (proxyId: string) => void;
  /** Called for each TLS error Caddy logged, with the names it concerns. */
  onTlsError?: (names: string[], message: string) => void;
}

/** Counts requests per proxy from Caddy's access log and writes them to the database. */
export class AccessLogMeter {
  private server: Server | undefined;
  private path: string | undefined;
  private sockets = new Set<Socket>();
  private traffic = new Map<string, TrafficCount>();
  /** Domain → proxy id, from the config sync's last read. */
  private domains = new Map<string, string>();

  constructor(
    private readonly db: Database,
    private readonly options: AccessLogMeterOptions = {},
  ) {}

  /** The proxies whose requests are counted (every proxy, as last read from the database). */
  setProxies(rows: readonly { id: string; domain: string }[]): void {
    this.domains = new Map(rows.map((r) => [r.domain, r.id]));
  }

  /** Listens for Caddy's log lines on a unix socket at `path` (replacing a stale one). */
  async listen(path: string): Promise<void> {
    rmSync(path, { force: true });
    this.path = path;
    const server = createServer((socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
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
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
  }

  /** Closes the socket (and removes it); counts not yet flushed stay for a last `flush`. */
  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    if (this.path) rmSync(this.path, { force: true });
  }

  /** One JSON line of Caddy's log. */
  onLogLine(line: string): void {
    const event = parseCaddyLogLine(line);
    if (event?.kind === 'tls_error') this.options.onTlsError?.(event.names, event.message);
    if (event?.kind !== 'access') return;
    const proxyId = proxyOfHost(this.domains, event.host);
    if (!proxyId) return;
    const count = this.traffic.get(proxyId) ?? { requests: 0, bytesSent: 0, bytesReceived: 0, serverErrors: 0, last: event.at };
    count.requests += 1;
    count.bytesSent += event.bytesSent;
    count.bytesReceived += event.bytesReceived;
    if (event.status >= 500) count.serverErrors += 1;
    count.last = event.at;
    this.traffic.set(proxyId, count);
    if (event.status === 502) this.options.onBadGateway?.(proxyId);
  }

  /** Adds the counts gathered since the last flush to the database. */
  async flush(): Promise<void> {
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
}
