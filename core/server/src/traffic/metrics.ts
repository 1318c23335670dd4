/**
 * `/metrics` in the Prometheus text format (prom-client, one registry per controller): traffic per
 * instance NIC named after node_exporter (`gatehouse_instance_network_receive_bytes_total` …, the
 * lifetime totals the controller counted, so they only grow), port forwards and web proxies per
 * host, agents online, how far each host's agent is behind its desired revision, how long agents
 * take to apply a new revision, HTTP requests and GraphQL operations, and the process's own
 * metrics. Database-backed values are read when scraped.
 *
 * Never open by default: on the API port `/metrics` needs an admin token (`Authorization: Bearer`);
 * `gatehouse serve --metrics-listen ADDR:PORT` also serves it without a token on an address of
 * its own (a private one for the Prometheus server).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { inject, injectable } from 'tsyringe';
import type { Plugin } from 'graphql-yoga';
import { isAdmin, type Actor } from '../auth/actor.js';
import { sql } from 'drizzle-orm';
import { rowsOf, type Database } from '../db/database.js';
import { DatabaseToken, EventBusToken } from '../di/tokens.js';
import type { EventBus } from '../events/event-bus.js';
import { HostAgentService } from '../services/host-agent-service.js';

/** The path Prometheus scrapes. */
export const METRICS_PATH = '/metrics';

/** Buckets (seconds) of the apply latency: from a committed revision to the agent reporting it applied. */
const APPLY_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
/** Revisions awaiting their apply kept per host (older ones are dropped). */
const MAX_PENDING_REVISIONS = 1000;

type Num = string | number;

/** The controller's metrics; see the file comment. */
@injectable()
export class ControllerMetrics {
  readonly registry = new Registry();
  private readonly httpRequests: Counter<'method' | 'route' | 'code'>;
  private readonly httpDuration: Histogram<'route'>;
  private readonly operations: Counter<'type' | 'result'>;
  private readonly operationDuration: Histogram<'type'>;
  private readonly applyDuration: Histogram;
  /** Per host: revision → when this replica heard it was committed. */
  private readonly pending = new Map<string, Map<number, number>>();
  private listening: AsyncGenerator<unknown>[] = [];

  constructor(
    @inject(DatabaseToken) private readonly db: Database,
    @inject(EventBusToken) private readonly events: EventBus,
    @inject(HostAgentService) private readonly agents: HostAgentService,
  ) {
    const registers = [this.registry];
    this.httpRequests = new Counter({
      name: 'gatehouse_http_requests_total',
      help: 'HTTP requests answered, by method, route (graphql, metrics, web, other) and status code.',
      labelNames: ['method', 'route', 'code'],
      registers,
    });
    this.httpDuration = new Histogram({
      name: 'gatehouse_http_request_duration_seconds',
      help: 'Time to answer an HTTP request, by route.',
      labelNames: ['route'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.operations = new Counter({
      name: 'gatehouse_graphql_operations_total',
      help: 'GraphQL operations executed (HTTP and WebSocket), by type (query, mutation, subscription) and result (ok, error).',
      labelNames: ['type', 'result'],
      registers,
    });
    this.operationDuration = new Histogram({
      name: 'gatehouse_graphql_operation_duration_seconds',
      help: 'Time to execute a GraphQL query or mutation, by type.',
      labelNames: ['type'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.applyDuration = new Histogram({
      name: 'gatehouse_agent_apply_duration_seconds',
      help: "Time from a host's desired revision being committed to its agent reporting it applied (seen by this controller replica).",
      buckets: APPLY_BUCKETS,
      registers,
    });
    this.databaseMetrics(registers);
  }

  /** Starts the process metrics and listening for revisions and agent reports (idempotent; a controller calls it, in-process test APIs do not). */
  start(): void {
    if (this.listening.length > 0) return;
    collectDefaultMetrics({ register: this.registry, prefix: 'gatehouse_' });
    const revisions = this.events.subscribe('hostRevision') as unknown as AsyncGenerator<{ hostId: string; revision: number }>;
    const statuses = this.events.subscribe('hostAgentStatus') as unknown as AsyncGenerator<{ hostId: string }>;
    this.listening = [revisions, statuses];
    void (async () => {
      for await (const { hostId, revision } of revisions) {
        let waiting = this.pending.get(hostId);
        if (!waiting) this.pending.set(hostId, (waiting = new Map()));
        if (!waiting.has(revision)) waiting.set(revision, performance.now());
        if (waiting.size > MAX_PENDING_REVISIONS) waiting.delete(waiting.keys().next().value!);
      }
    })().catch(() => undefined);
    void (async () => {
      for await (const { hostId } of statuses) {
        const waiting = this.pending.get(hostId);
        if (!waiting || waiting.size === 0) continue;
        const [status] = await this.agents.statuses([hostId]).catch(() => []);
        const applied = status?.appliedRevision;
        if (applied == null) continue;
        const now = performance.now();
        for (const [revision, at] of waiting)
          if (revision <= applied) {
            this.applyDuration.observe((now - at) / 1000);
            waiting.delete(revision);
          }
      }
    })().catch(() => undefined);
  }

  /** Stops listening. */
  async stop(): Promise<void> {
    await Promise.all(this.listening.map((l) => l.return(undefined)));
    this.listening = [];
  }

  /** Counts one HTTP request when its answer is sent. */
  observeHttp(request: IncomingMessage, response: ServerResponse): void {
    const started = performance.now();
    const path = (request.url ?? '/').split('?')[0]!;
    const route =
      path === '/graphql' || path.startsWith('/graphql/') ? 'graphql' : path === METRICS_PATH ? 'metrics' : request.method === 'GET' ? 'web' : 'other';
    response.once('finish', () => {
      this.httpRequests.inc({ method: knownMethod(request.method), route, code: String(response.statusCode) });
      this.httpDuration.observe({ route }, (performance.now() - started) / 1000);
    });
  }

  /** A yoga plugin counting operations and timing queries and mutations. */
  yogaPlugin(): Plugin {
    const count = (type: string, errors: boolean) => this.operations.inc({ type, result: errors ? 'error' : 'ok' });
    return {
      onExecute: ({ args }) => {
        const started = performance.now();
        const type = operationType(args.document, args.operationName);
        return {
          onExecuteDone: ({ result }) => {
            const errors = 'errors' in result && Array.isArray(result.errors) && result.errors.length > 0;
            count(type, errors);
            this.operationDuration.observe({ type }, (performance.now() - started) / 1000);
          },
        };
      },
      onSubscribe: ({ args }) => ({
        onSubscribeResult: ({ result }) => count(operationType(args.document, args.operationName), 'errors' in result && Array.isArray(result.errors)),
      }),
    };
  }

  /** The text exposition. */
  async text(): Promise<string> {
    return this.registry.metrics();
  }

  /** Answers GET /metrics for `actor` (null: no token): admins only. */
  async serve(actor: Actor | null, response: ServerResponse): Promise<void> {
    if (!actor) {
      response
        .writeHead(401, { 'content-type': 'text/plain', 'www-authenticate': 'Bearer' })
        .end('/metrics needs an admin token: Authorization: Bearer <token>\n');
      return;
    }
    if (!isAdmin(actor)) {
      response.writeHead(403, { 'content-type': 'text/plain' }).end('/metrics is for admin tokens\n');
      return;
    }
    await this.serveOpen(response);
  }

  /** Answers GET /metrics without a token check (the separate metrics listener). */
  async serveOpen(response: ServerResponse): Promise<void> {
    const body = await this.text();
    response.writeHead(200, { 'content-type': this.registry.contentType }).end(body);
  }

  /** Metrics read from the database when scraped. */
  private databaseMetrics(registers: Registry[]): void {
    const db = this.db;
    const query = async <T>(text: string) => rowsOf<T>(await db.execute(sql.raw(text)));
    const nicLabels = ['host_id', 'host', 'instance_id', 'instance', 'nic_id', 'device'] as const;
    const nicCounters = (['receive_bytes', 'receive_packets', 'transmit_bytes', 'transmit_packets'] as const).map(
      (what) =>
        new Counter({
          name: `gatehouse_instance_network_${what}_total`,
          help: `${what.startsWith('receive') ? 'Into' : 'Out of'} the instance through this NIC (counted on the host side), ${what.endsWith('bytes') ? 'bytes' : 'packets'}, since it was created.`,
          labelNames: nicLabels,
          registers,
        }),
    );
    // one query fills the four NIC counters: the first one's collect reads, the others take their part
    let nicRows: Promise<Record<string, Num>[]> | undefined;
    nicCounters.forEach((counter, n) => {
      onCollect(counter, async () => {
        if (n === 0)
          nicRows = query<Record<string, Num>>(`
            select p.object_id as nic_id, p.instance_id, p.host_id, coalesce(h.name, '') as host, coalesce(i.name, '') as instance, coalesce(n.name, '') as device,
                   sum(p.rx_bytes) as rx_bytes, sum(p.rx_packets) as rx_packets, sum(p.tx_bytes) as tx_bytes, sum(p.tx_packets) as tx_packets
            from traffic_periods p left join hosts h on h.id = p.host_id left join instances i on i.id = p.instance_id left join nics n on n.id = p.object_id
            where p.object_type = 'nic' group by p.object_id, p.instance_id, p.host_id, h.name, i.name, n.name`);
        const rows = (await nicRows) ?? [];
        const column = ['rx_bytes', 'rx_packets', 'tx_bytes', 'tx_packets'][n]!;
        counter.reset();
        for (const r of rows)
          counter.inc(
            {
              host_id: String(r.host_id),
              host: String(r.host),
              instance_id: String(r.instance_id ?? ''),
              instance: String(r.instance),
              nic_id: String(r.nic_id),
              device: String(r.device),
            },
            Number(r[column]),
          );
      });
    });
    const perHost = (name: string, help: string, sqlText: string, kind: 'gauge' | 'counter' = 'gauge') => {
      const metric =
        kind === 'gauge'
          ? new Gauge({ name, help, labelNames: ['host_id', 'host'], registers })
          : new Counter({ name, help, labelNames: ['host_id', 'host'], registers });
      onCollect(metric, async () => {
        const rows = await query<{ host_id: string; host: string; n: Num }>(sqlText);
        metric.reset();
        for (const r of rows) metric.inc({ host_id: r.host_id, host: r.host }, Number(r.n));
      });
    };
    perHost(
      'gatehouse_host_port_forwards',
      'Port forwards on the host.',
      `select h.id as host_id, h.name as host, count(f.id) as n from hosts h left join port_forwards f on f.host_id = h.id
         and (f.import_id is null or f.import_id in (select id from port_forward_imports where state = 'committed')) group by h.id, h.name`,
    );
    perHost(
      'gatehouse_host_web_proxies',
      'Web proxies (domains) to instances of the host.',
      'select h.id as host_id, h.name as host, count(w.id) as n from hosts h left join web_proxies w on w.host_id = h.id group by h.id, h.name',
    );
    perHost(
      'gatehouse_host_port_forward_receive_bytes_total',
      "Bytes that arrived on the host's port forwards (before DNAT), since they were created.",
      "select h.id as host_id, h.name as host, coalesce(sum(p.rx_bytes), 0) as n from hosts h join traffic_periods p on p.host_id = h.id and p.object_type = 'port_forward' group by h.id, h.name",
      'counter',
    );
    perHost(
      'gatehouse_host_port_forward_rate_limited_connections_total',
      "New connections the rate limits of the host's port forwards refused (dropped or rejected), summed over its current forwards (PortForward.rateLimited).",
      'select h.id as host_id, h.name as host, coalesce(sum(f.rate_limited_connections), 0) as n from hosts h join port_forwards f on f.host_id = h.id where f.rate_limited_since is not null group by h.id, h.name',
      'counter',
    );
    perHost(
      'gatehouse_host_desired_revision_lag',
      'Desired revisions of the host its agent has not applied yet (desired minus applied; the desired revision when it never applied one).',
      'select h.id as host_id, h.name as host, h.desired_revision - coalesce(a.applied_revision, 0) as n from hosts h left join host_agents a on a.host_id = h.id',
    );
    // both gauges from one read: the first one's collect reads, the second waits for it
    let presence: Promise<{ hostId: string; host: string; online: boolean }[]> | undefined;
    const online = new Gauge({
      name: 'gatehouse_host_agent_online',
      help: "1 while the host's agent is connected, else 0.",
      labelNames: ['host_id', 'host'],
      registers,
    });
    const onlineTotal = new Gauge({ name: 'gatehouse_agents_online', help: 'Host agents connected.', registers });
    onCollect(online, async () => {
      presence = (async () => {
        const hosts = await query<{ id: string; name: string }>('select id, name from hosts');
        const statuses = await this.agents.statuses(hosts.map((h) => h.id));
        return statuses.map((s, n) => ({ hostId: s.hostId, host: hosts[n]!.name, online: s.online }));
      })();
      online.reset();
      for (const p of await presence) online.set({ host_id: p.hostId, host: p.host }, p.online ? 1 : 0);
    });
    onCollect(onlineTotal, async () => {
      onlineTotal.set((await presence)?.filter((p) => p.online).length ?? 0);
    });
  }
}

/** Gives a metric a function run before each scrape (prom-client's `collect`). */
function onCollect(metric: object, collect: () => Promise<void>): void {
  (metric as { collect?: () => Promise<void> }).collect = collect;
}

function knownMethod(method: string | undefined): string {
  return method && ['GET', 'POST', 'PUT', 'DELETE', 'HEAD', 'OPTIONS', 'PATCH'].includes(method) ? method : 'other';
}

function operationType(document: { definitions: readonly { kind: string; operation?: string; name?: { value: string } }[] }, name?: string | null): string {
  const operations = document.definitions.filter((d) => d.kind === 'OperationDefinition');
  const chosen = (name ? operations.find((d) => d.name?.value === name) : undefined) ?? operations[0];
  return chosen?.operation ?? 'unknown';
}
