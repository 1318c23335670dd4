/** The logger the controller writes to; `console` satisfies it. */
export interface Logger {
  info(message: string, ...rest: unknown[]): void;
  warn(message: string, ...rest: unknown[]): void;
  error(message: string, ...rest: unknown[]): void;
}

/** A logger that drops everything (tests, embedded use). */
export const quietLogger: Logger = { info: () => {}, warn: () => {}, error: () => {} };
