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
 * revision committed while this replica was deaf reaches its agents, once. Audit entries, object
 * status changes and proxy changes of that window are not replayed (their readers re-read on
 * reconnect: the audit log and statuses are queries, Caddy is synced on start).
 */
import { eq } from 'drizzle-orm';
import postgres from 'postgres';
import type { Database } from './database-types.js';
import { auditLog, hosts } from './schema.js';

const CHANNEL = 'gatehouse_events';
// room for the envelope below PostgreSQL's 8000-byte NOTIFY limit
const MAX_INLINE = 7000;

interface Envelope {
  topic: string;
  payload?: unknown;
  /** Audit entries too large to inline: their id. */
  auditRef?: string;
}

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
  /** NOTIFY payloads published in this turn of the event loop, sent together. */
  private unsent: string[] = [];
  /** How many times LISTEN was re-established after its connection closed, and when last (performance.now()). */
  relistens = 0;
  relistenedAt: number | undefined;

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

  /** Dispatches here (not through NOTIFY) a hostRevision and a hostAgentStatus for every host, read from the database. */
  private async replay(): Promise<void> {
    try {
      const rows = await this.db.select({ hostId: hosts.id, revision: hosts.desiredRevision }).from(hosts);
      this.queue = this.queue.then(() => {
        for (const row of rows) {
          super.dispatchEvent(new CustomEvent('hostRevision', { detail: row }));
          super.dispatchEvent(new CustomEvent('hostAgentStatus', { detail: { hostId: row.hostId } }));
        }
      });
      await this.queue;
    } catch (err) {
      // the database went away again: the next close starts over
      this.onError(err);
    }
  }

  /** Publishes through PostgreSQL; delivery happens when the NOTIFY comes back. */
  override dispatchEvent(event: Event): boolean {
    const detail = (event as CustomEvent).detail as unknown;
    let text = JSON.stringify({ topic: event.type, payload: detail } satisfies Envelope);
    if (Buffer.byteLength(text) > MAX_INLINE) {
      const id = (detail as { id?: unknown })?.id;
      if (event.type !== 'audit' || typeof id !== 'string') {
        this.onError(new Error(`event ${event.type} is too large for NOTIFY (${Buffer.byteLength(text)} bytes)`));
        return false;
      }
      text = JSON.stringify({ topic: event.type, auditRef: id } satisfies Envelope);
    }
    if (this.unsent.push(text) === 1) queueMicrotask(() => this.send());
    return true;
  }

  /**
   * Sends the payloads published in one turn as one statement, in order: a NOTIFY per statement
   * made the 50,000 audit entries of an import 50,000 transactions, each flushing PostgreSQL's WAL.
   * (PostgreSQL delivers identical payloads of one transaction once; every receiver of a repeated
   * event, such as a host's agent status, reads the database back anyway.)
   */
  private send(): void {
    const texts = this.unsent;
    this.unsent = [];
    // one JSON array, not a text[] parameter: postgres.js escapes array elements in JavaScript, character by character
    this.sql`select pg_notify(${CHANNEL}, t.text) from json_array_elements_text(${JSON.stringify(texts)}::text::json) with ordinality as t(text, n) order by t.n`.catch((err: unknown) => {
      this.onError(err);
      // delivery comes back through NOTIFY: what these carried is replayed from the database
      if (this.listening && !this.stopped) void this.replay();
    });
  }

  /** Stops listening and closes the connection. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.relistening;
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
      super.dispatchEvent(new CustomEvent(envelope.topic, { detail: payload }));
    } catch (err) {
      this.onError(err);
    }
  }
}
