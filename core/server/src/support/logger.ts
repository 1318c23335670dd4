/** The logger the controller writes to; `console` satisfies it. */
export interface Logger {
  info(message: string, ...rest: unknown[]): void;
  warn(message: string, ...rest: unknown[]): void;
  error(message: string, ...rest: unknown[]): void;
}

/** A logger that drops everything (tests, embedded use). */
export const quietLogger: Logger = { info: () => {}, warn: () => {}, error: () => {} };

const MAX_LINE = 500;

/**
 * One line for an unexpected error: its class, SQLSTATE and message, then the top of its stack —
 * never a failed query's text or parameters (a database error's message carries both, and one
 * large request would copy megabytes into the log), at most 500 characters of message.
 */
export function describeUnexpected(err: unknown): string {
  const chain: unknown[] = [];
  for (let e: unknown = err; e && chain.length < 5; e = (e as { cause?: unknown }).cause) chain.push(e);
  // the innermost error with a SQLSTATE is the database's own: its message names no parameters
  const database = chain.find((e) => typeof (e as { code?: unknown }).code === 'string' && /^[0-9A-Z]{5}$/.test((e as { code: string }).code)) as
    (Error & { code: string }) | undefined;
  const shown = database ?? (err instanceof Error ? err : undefined);
  const name = shown?.name ?? typeof err;
  let message = shown ? shown.message : String(err);
  if (!database && /^Failed query:/.test(message)) message = 'Failed query (text and parameters not logged)';
  // PostgreSQL quotes the offending value ('invalid input syntax for type uuid: "…"'): a request's data, not logged
  message = message.replace(/"[^"]{17,}"/g, (quoted) => `(a value of ${quoted.length - 2} characters)`);
  if (message.length > MAX_LINE) message = `${message.slice(0, MAX_LINE)}… (${message.length} characters)`;
  const frames = (err instanceof Error ? (err.stack ?? '') : '')
    .split('\n')
    .filter((line) => /^\s+at /.test(line))
    .slice(0, 4)
    .map((line) => line.trim());
  return [`${name}${database ? ` ${database.code}` : ''}: ${message.replace(/\s+/g, ' ')}`, ...frames].join(' | ');
}

/**
 * Logs unexpected errors at most `limit` times per `windowMs` (default 20 a minute); what is
 * dropped is counted and reported with the next line that gets through.
 */
export class UnexpectedErrorLog {
  private windowStart = 0;
  private inWindow = 0;
  private dropped = 0;

  constructor(
    private readonly logger: Logger,
    private readonly limit = 20,
    private readonly windowMs = 60_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** Logs `what` and the error's one-line description, unless the window's budget is spent. */
  error(what: string, err: unknown): void {
    const t = this.now();
    if (t - this.windowStart >= this.windowMs) {
      this.windowStart = t;
      this.inWindow = 0;
    }
    if (this.inWindow >= this.limit) {
      this.dropped++;
      return;
    }
    this.inWindow++;
    const dropped = this.dropped ? ` (${this.dropped} similar line(s) suppressed before this one)` : '';
    this.dropped = 0;
    this.logger.error(`${what}: ${describeUnexpected(err)}${dropped}`);
  }
}
