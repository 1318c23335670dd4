/**
 * Events between controller replicas over PostgreSQL LISTEN/NOTIFY. Every publish goes out as a
 * NOTIFY and every replica (this one included) dispatches what it hears, so all subscribers see
 * the same events in the same order. NOTIFY payloads are limited to 8000 bytes: a larger audit
 * entry travels as a reference and is read back from the database by each receiver.
 */
import { eq } from 'drizzle-orm';
import type postgres from 'postgres';
import type { Database } from './database-types.js';
import { auditLog } from './schema.js';

const CHANNEL = 'gatehouse_events';
// room for the envelope below PostgreSQL's 8000-byte NOTIFY limit
const MAX_INLINE = 7000;

interface Envelope {
  topic: string;
  payload?: unknown;
  /** Audit entries too large to inline: their id. */
  auditRef?: string;
}

/** An EventTarget for yoga's createPubSub that fans out through PostgreSQL. */
export class PostgresEventTarget extends EventTarget {
  private unlisten?: () => Promise<void>;
  // notifications are handled one after another, so a by-reference entry cannot be overtaken
  private queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly sql: postgres.Sql,
    private readonly db: Database,
    private readonly onError: (err: unknown) => void = () => {},
  ) {
    super();
  }

  /** Starts listening; resolves once events published from now on will be received. */
  async start(): Promise<void> {
    const listener = await this.sql.listen(CHANNEL, (text) => {
      this.queue = this.queue.then(() => this.receive(text));
    });
    this.unlisten = () => listener.unlisten();
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
    this.sql.notify(CHANNEL, text).catch(this.onError);
    return true;
  }

  /** Stops listening. */
  async stop(): Promise<void> {
    await this.unlisten?.();
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
