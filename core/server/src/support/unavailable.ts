/**
 * The store is unavailable: PostgreSQL restarting, failing over or unreachable. Such a failure is
 * not a defect of the request nor an expected result of one mutation: the GraphQL layer answers
 * it as an error with `extensions.code: UNAVAILABLE` (HTTP 503) for any operation, so that
 * clients retry, rather than as a member of every mutation's result union.
 */

// the driver's connection failures (postgres.js codes and Node socket errors)
const CONNECTION_CODES = new Set([
  'CONNECTION_CLOSED',
  'CONNECTION_ENDED',
  'CONNECTION_DESTROYED',
  'CONNECT_TIMEOUT',
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
]);
// PostgreSQL's: admin_shutdown, crash_shutdown, cannot_connect_now (starting up, shutting down, in recovery)
const SQLSTATES = new Set(['57P01', '57P02', '57P03']);

/** Whether `error` (or one of its causes) says the database cannot be reached or is restarting. */
export function isStoreUnavailable(error: unknown): boolean {
  for (let e = error, depth = 0; e !== null && typeof e === 'object' && depth < 6; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code !== 'string') continue;
    // SQLSTATE class 08: connection exceptions
    if (CONNECTION_CODES.has(code) || SQLSTATES.has(code) || /^08[0-9A-Z]{3}$/.test(code)) return true;
  }
  return false;
}

/** The one-line reason of an unavailable store, for the client (no query text, no parameters). */
export function unavailableReason(error: unknown): string {
  for (let e = error, depth = 0; e !== null && typeof e === 'object' && depth < 6; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && isStoreUnavailable({ code })) return code;
  }
  return 'unknown';
}
