/**
 * Events between controller replicas over PostgreSQL LISTEN/NOTIFY. Every publish goes out as a
 * NOTIFY and every replica (this one included) dispatches what it hears, so all subscribers see
 * the same events in the same order. NOTIFY payloads are limited to 8000 bytes: a larger audit
 * entry travels as a reference and is read back from the database by each receiver.
 *
 * PostgreSQL restarts and failovers: the LISTEN connection is this class's own. When it closes,
 * it is opened again with backoff (0.1 s doubling to 5 s) until LISTEN succeeds; NOTIFYs sent
 * while it was closed are gone, so the events that matter for correctness are then replayed from
 * the database, not from NOTIFY: a `hostRevision` (with the committed revision) and a
 * `hostAgentStatus` for every host, dispatched on this replica only. Their subscribers read the
 * database back (desired-state streams push only a revision newer than the one they sent), so a
 * revision committed while this replica was deaf reaches its agents, once. The rest of that window
 * is replayed too, from what the database keeps:
 *
 * - `audit`: the entries written since the connection was lost (less a minute for transactions
 *   that began before and committed after), except those heard before the loss (their ids are
 *   remembered while listening), in commit-time order, at most REPLAY_LIMIT of them;
 * - `objectStatus`: the current status of every object of each host whose agent reported statuses
 *   in that window (the reports' audit entries say which hosts), and of every web proxy (Caddy's
 *   sync writes no audit entry): a subscriber may see a status it already had, never miss one;
 * - `webProxyChanged`: one `{ kind: 'resync' }`, on which the proxy units read the database again.
 *
 * An audit entry of a transaction that ran more than a minute before the loss and committed after
 * it (a staged import's entries are written in the import's transactions) is not replayed.
 */
import { asc, eq, gte, sql } from 'drizzle-orm';
import postgres from 'postgres';
import type { Database } from './database-types.js';
import { auditLog, hosts } from './schema.js';
import { statusBatches, type ObjectStatusChange } from '../events/event-payloads.js';

const CHANNEL = 'gatehouse_events';
// room for the envelope below PostgreSQL's 8000-byte NOTIFY limit
const MAX_INLINE = 7000;

interface Envelope {
  topic: string;
  payload?: unknown;
  /** Audit entries too large to inline: their id. */
  auditRef?: string;
}

/**
 * Most characters of payloads in one NOTIFY statement (~128 KB): building a statement is
 * synchronous work in the driver (a few ms for this much), and the events of a large import go
 * out in several statements, one after another.
 */
const NOTIFY_STATEMENT_CHARS = 128 * 1024;

/** How long before the loss of the connection the audit replay starts (transactions that began before it and committed after). */
const REPLAY_MARGIN_MS = 60_000;
/** At most this many audit entries and object statuses are replayed after one outage. */
export const REPLAY_LIMIT = 50_000;

/** The application_name of the LISTEN connection (pg_stat_activity shows it). */
export const EVENTS_APPLICATION_NAME = 'gatehouse-events';

/** Bounds of the re-listen backoff (ms); the first attempt waits the minimum too (a closed connection is often a server going down). */
export const RELISTEN_BACKOFF = { minMs: 100, maxMs: 5000 };

/**
 * Seconds a postgres.js connection waits before connecting again after `retries` failures: 0.1 s
 * doubling to 1 s. The driver's default grows to 20 s, which after a restart holds every request
 * (and the LISTEN connection) that long behind a server that is already back.
 */
export function reconnectDelayS(retries: number): number {
  return Math.min(1, 0.1 * 2 ** Math.min(retries, 10));
}

/** An EventTarget for yoga's createPubSub that fans out through PostgreSQL. */
export class PostgresEventTarget extends EventTarget {
  private readonly sql: postgres.Sql;
  // notifications are handled one after another, so a by-reference entry cannot be overtaken
  private queue: Promise<void> = Promise.resolve();
  private listening = false;
  private relistening: Promise<void> | undefined;
  private stopped = false;
  private started = false;
  /** NOTIFY payloads published, in order; those before `unsentFrom` were handed to the driver. */
  private unsent: string[] = [];
  private unsentFrom = 0;
  /** The loop sending `unsent`, one statement at a time, while it runs. */
  private sending: Promise<void> | undefined;
  /** How many times LISTEN was re-established after its connection closed, and when last (performance.now()). */
  relistens = 0;
  relistenedAt: number | undefined;
  /** What the last replay dispatched, by topic. */
  replayed: Record<'hostRevision' | 'audit' | 'objectStatus' | 'webProxyChanged', number> = { hostRevision: 0, audit: 0, objectStatus: 0, webProxyChanged: 0 };
  /** Audit entries heard through NOTIFY (id → when), kept REPLAY_MARGIN_MS and more while listening: a replay skips them. */
  private readonly heard = new Map<string, number>();
  /** When the LISTEN connection was lost (Date.now()), until the replay after it is done. */
  private lostAt: number | undefined;

  constructor(
    url: string,
    private readonly db: Database,
    private readonly onError: (err: unknown) => void = () => {},
    private readonly onRelisten: (downMs: number) => void = () => {},
  ) {
    super();
    // one connection, never idled out: LISTEN lives on it, NOTIFY goes through it
    this.sql = postgres(url, {
      max: 1,
      idle_timeout: 0,
      max_lifetime: null,
      connect_timeout: 5,
      backoff: reconnectDelayS,
      connection: { application_name: EVENTS_APPLICATION_NAME },
      onnotice: () => {},
      onclose: () => this.lost(),
      // postgres.js' connection option behind its own listen(), which re-listens only once
      ...({ onnotify: (channel: string, text: string) => channel === CHANNEL && this.enqueue(text) } as object),
    });
  }

  /** Starts listening; resolves once events published from now on will be received. */
  async start(): Promise<void> {
    await this.sql`listen ${this.sql(CHANNEL)}`;
    this.listening = true;
    this.started = true;
  }

  private enqueue(text: string): void {
    this.queue = this.queue.then(() => this.receive(text));
  }

  /** The LISTEN connection closed: listen again (with backoff), then replay what NOTIFY may have lost. */
  private lost(): void {
    if (this.stopped || !this.started) return;
    this.listening = false;
    this.lostAt ??= Date.now();
    // one loop at a time; a close just as it ends starts the next one
    this.relistening ??= this.relisten().finally(() => {
      this.relistening = undefined;
      if (!this.listening) this.lost();
    });
  }

  private async relisten(): Promise<void> {
    // a close while replaying (the server flapping) goes round again: lost() leaves that to this loop
    while (!this.listening && !this.stopped) {
      const down = performance.now();
      for (let attempt = 0; !this.listening && !this.stopped; attempt++) {
        const ms = Math.min(RELISTEN_BACKOFF.maxMs, RELISTEN_BACKOFF.minMs * 2 ** Math.min(attempt, 10));
        await new Promise((r) => setTimeout(r, ms));
        try {
          await this.sql`listen ${this.sql(CHANNEL)}`;
          this.listening = true;
        } catch {
          // not back yet
        }
      }
      if (this.stopped) return;
      this.relistens++;
      this.relistenedAt = performance.now();
      this.onRelisten(Math.round(performance.now() - down));
      await this.replay();
    }
  }

  /**
   * Dispatches here (not through NOTIFY) what the database says about the window in which this
   * replica could not hear: a hostRevision and a hostAgentStatus for every host, the audit entries
   * and object statuses of the window, and a proxy resync (see the top of this file). After a
   * failed NOTIFY of this replica's own (`window` false: still listening, nothing else missed),
   * only the hosts.
   */
  private async replay(window = true): Promise<void> {
    try {
      const lostAt = this.lostAt ?? Date.now();
      const rows = await this.db.select({ hostId: hosts.id, revision: hosts.desiredRevision }).from(hosts);
      const since = new Date(lostAt - REPLAY_MARGIN_MS);
      const entries = window
        ? (await this.db.select().from(auditLog).where(gte(auditLog.at, since)).orderBy(asc(auditLog.at), asc(auditLog.id)).limit(REPLAY_LIMIT)).filter(
            (e) => !this.heard.has(e.id),
          )
        : [];
      // hosts whose agents reported statuses meanwhile, with the revision of their last report
      const reported = new Map<string, number>();
      for (const e of entries) if (e.action === 'host.statusReport') reported.set(e.objectId, Number((e.after as { revision?: number } | null)?.revision ?? 0));
      const statuses = window ? await this.objectStatuses([...reported.keys()]) : [];
      let audits = 0;
      this.queue = this.queue.then(() => {
        for (const row of rows) {
          super.dispatchEvent(new CustomEvent('hostRevision', { detail: row }));
          super.dispatchEvent(new CustomEvent('hostAgentStatus', { detail: { hostId: row.hostId } }));
        }
        // at most once each: an entry committed just after LISTEN came back may be heard as well as read
        for (const entry of entries) {
          if (this.heard.has(entry.id)) continue;
          this.remember(entry.id);
          super.dispatchEvent(new CustomEvent('audit', { detail: entry }));
          audits++;
        }
        const changes = statuses.map((s) => ({ ...s, revision: reported.get(s.hostId) ?? 0 }));
        for (const batch of statusBatches(changes)) super.dispatchEvent(new CustomEvent('objectStatus', { detail: batch }));
        if (window) super.dispatchEvent(new CustomEvent('webProxyChanged', { detail: { kind: 'resync' } }));
      });
      await this.queue;
      this.replayed = { hostRevision: rows.length, audit: audits, objectStatus: statuses.length, webProxyChanged: window ? 1 : 0 };
      if (window && this.listening) this.lostAt = undefined;
    } catch (err) {
      // the database went away again: the next close starts over
      this.onError(err);
    }
  }

  /** The current status of every object of `hostIds` and of every web proxy (at most REPLAY_LIMIT). */
  private async objectStatuses(hostIds: string[]): Promise<Omit<ObjectStatusChange, 'revision'>[]> {
    const ids = sql`${`{${hostIds.join(',')}}`}::uuid[]`;
    const result = await this.db.execute(sql`
      select 'port_forward' as "objectType", o.id as "objectId", o.host_id as "hostId", o.owner_id as "ownerId", o.status, o.status_error as error
        from port_forwards o where o.host_id = any(${ids})
      union all
      select 'firewall_rule', o.id, i.host_id, o.owner_id, o.status, o.status_error
        from firewall_rules o join instances i on i.id = o.instance_id where i.host_id = any(${ids})
      union all
      select 'bandwidth_limit', o.id, i.host_id, o.owner_id, o.status, o.status_error
        from bandwidth_limits o join instances i on i.id = o.instance_id where i.host_id = any(${ids})
      union all
      select 'nic', o.id, i.host_id, i.owner_id, o.status, o.status_error
        from nics o join instances i on i.id = o.instance_id where i.host_id = any(${ids})
      union all
      select 'web_proxy', o.id, o.host_id, o.owner_id, o.status, o.status_error from web_proxies o
      limit ${REPLAY_LIMIT}`);
    return result as unknown as Omit<ObjectStatusChange, 'revision'>[];
  }

  /** Remembers a heard audit entry; forgets those heard long enough ago that no replay window reaches them (only while listening). */
  private remember(id: string): void {
    const now = Date.now();
    this.heard.set(id, now);
    if (this.lostAt !== undefined) return;
    for (const [old, at] of this.heard) {
      if (now - at <= 2 * REPLAY_MARGIN_MS) break;
      this.heard.delete(old);
    }
  }

  /** Publishes through PostgreSQL; delivery happens when the NOTIFY comes back. */
  override dispatchEvent(event: Event): boolean {
    const detail = (event as CustomEvent).detail as unknown;
    let text = JSON.stringify({ topic: event.type, payload: detail } satisfies Envelope);
    // UTF-8 takes at most 3 bytes per UTF-16 unit: most payloads need no byte count
    if (text.length * 3 > MAX_INLINE && Buffer.byteLength(text) > MAX_INLINE) {
      const id = (detail as { id?: unknown })?.id;
      if (event.type !== 'audit' || typeof id !== 'string') {
        this.onError(new Error(`event ${event.type} is too large for NOTIFY (${Buffer.byteLength(text)} bytes)`));
        return false;
      }
      text = JSON.stringify({ topic: event.type, auditRef: id } satisfies Envelope);
    }
    this.unsent.push(text);
    this.sending ??= this.send();
    return true;
  }

  /**
   * Sends the published payloads in order, many to a statement: a NOTIFY per statement made the
   * 50,000 audit entries of an import 50,000 transactions, each flushing PostgreSQL's WAL. The
   * first statement goes out at the end of the turn that published (a turn's events travel
   * together), and one statement at a time, of at most NOTIFY_STATEMENT_CHARS: handed to the
   * driver as they were published, an import's 200 statements of 250 entries queued behind each
   * other and the driver built the queued ones in one go (~40 MB, 630 ms without a turn free).
   * (PostgreSQL delivers identical payloads of one transaction once; every receiver of a repeated
   * event, such as a host's agent status, reads the database back anyway.)
   */
  private async send(): Promise<void> {
    await Promise.resolve();
    while (this.unsentFrom < this.unsent.length) {
      let chars = 0;
      let end = this.unsentFrom;
      while (end < this.unsent.length && (end === this.unsentFrom || chars + this.unsent[end]!.length <= NOTIFY_STATEMENT_CHARS))
        chars += this.unsent[end++]!.length;
      const texts = this.unsent.slice(this.unsentFrom, end);
      this.unsentFrom = end;
      // sent payloads are let go of now and then, not one by one (shifting a long array is linear)
      if (this.unsentFrom === this.unsent.length || this.unsentFrom >= 4096) {
        this.unsent = this.unsent.slice(this.unsentFrom);
        this.unsentFrom = 0;
      }
      // one JSON array, not a text[] parameter: postgres.js escapes array elements in JavaScript, character by character
      const sent = this
        .sql`select pg_notify(${CHANNEL}, t.text) from json_array_elements_text(${JSON.stringify(texts)}::text::json) with ordinality as t(text, n) order by t.n`.then(
        () => {},
        (err: unknown) => {
          this.onError(err);
          // delivery comes back through NOTIFY: what these carried is replayed from the database
          if (this.listening && !this.stopped) void this.replay(false);
        },
      );
      // without the connection (LISTEN is being restored) each goes to the driver at once, as published
      if (this.listening) await sent;
    }
    this.sending = undefined;
  }

  /** Stops listening and closes the connection. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.relistening;
    // what was published before goes out (the driver's end waits for queued statements too)
    await this.sending;
    await this.sql.end({ timeout: 5 });
  }

  private async receive(text: string): Promise<void> {
    try {
      const envelope = JSON.parse(text) as Envelope;
      let payload = envelope.payload;
      if (envelope.auditRef) {
        const [row] = await this.db.select().from(auditLog).where(eq(auditLog.id, envelope.auditRef));
        if (!row) return;
        payload = row;
      } else if (envelope.topic === 'audit') {
        // dates travel as strings; subscribers get the same shape as in-process
        const entry = payload as { at: string | Date };
        entry.at = new Date(entry.at);
      }
      if (envelope.topic === 'audit') {
        const id = (payload as { id: string }).id;
        if (this.heard.has(id)) return; // dispatched by a replay already
        this.remember(id);
      }
      super.dispatchEvent(new CustomEvent(envelope.topic, { detail: payload }));
    } catch (err) {
      this.onError(err);
    }
  }
}
