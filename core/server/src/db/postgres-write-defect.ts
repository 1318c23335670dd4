/**
 * postgres.js 3.4.x (3.4.10, the newest 3.x, included) has one known defect that kills a process:
 * a write deferred with `setImmediate(nextWrite)` runs after the connection's socket is gone (a
 * server restarting under traffic, a network cut) and throws `TypeError: Cannot read properties of
 * null (reading 'write')` from the timer, where no caller can catch it (porsager/postgres#1154,
 * #1208; the guards of #1168, #1176 and #1209 are not released; 4.x is a rewrite with another API).
 *
 * By then the connection's close has already failed its queries (CONNECTION_CLOSED, so their
 * callers got an error) and the connection reconnects by itself on its next query: the write that
 * throws has nothing left to deliver, and dropping it is what the proposed fixes do. So the
 * controller process recognises exactly that error (a TypeError with that message whose top
 * frame is `nextWrite` in postgres.js' `src/connection.js`), logs it and goes on; anything else
 * uncaught still ends the process, as Node would.
 */

/**
 * Whether `error` is postgres.js' write on a connection whose socket is gone, thrown from its own
 * `nextWrite` (judged by name, message and stack, so an error serialised across a worker counts too).
 */
export function isPostgresWriteDefect(error: unknown): boolean {
  const e = error as { name?: unknown; message?: unknown; stack?: unknown } | null;
  if (typeof e !== 'object' || e === null || e.name !== 'TypeError' || e.message !== "Cannot read properties of null (reading 'write')") return false;
  const top = String(e.stack ?? '')
    .split('\n')
    .find((line) => line.trimStart().startsWith('at '));
  return top !== undefined && /^\s*at (?:Immediate\.)?nextWrite \((?:file:\/\/)?\S*[\\/]postgres[\\/]src[\\/]connection\.js:\d+:\d+\)$/.test(top);
}

/** How the guard logs. */
export interface WriteDefectLogger {
  error(message: string, ...rest: unknown[]): void;
}

/**
 * Installs the process-wide handler (for the process that runs the controller, not for a library
 * user's): the defect is logged and counted, every other uncaught exception is printed and ends
 * the process with exit code 1, as without a handler. Returns the uninstaller and the count.
 */
export function guardPostgresWriteDefect(logger: WriteDefectLogger): { uninstall(): void; readonly count: number } {
  let count = 0;
  const handler = (error: Error) => {
    if (isPostgresWriteDefect(error)) {
      count++;
      logger.error(
        `postgres.js wrote to a database connection that had already closed (porsager/postgres#1154, seen ${count} time(s)); the write is dropped, the connection's queries had already failed and it reconnects on its next one`,
      );
      return;
    }
    process.removeListener('uncaughtException', handler);
    console.error(error);
    process.exit(1);
  };
  process.on('uncaughtException', handler);
  return {
    uninstall: () => process.removeListener('uncaughtException', handler),
    get count() {
      return count;
    },
  };
}
