/**
 * Running host tools: always `execFile` with an argument array (never a shell string), optionally
 * inside a network namespace (`ip netns exec NS ...`), with stdin and a time limit.
 */
import { execFile } from 'node:child_process';

/** A tool that exited non-zero, with what it printed. */
export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly args: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super(`${command} ${args.join(' ')} failed (exit ${exitCode ?? 'signal'}): ${stderr.trim() || '(no output)'}`);
    this.name = 'CommandError';
  }
}

/** Where a command runs: the host, or a named network namespace. */
export interface ExecTarget {
  netns?: string;
}

/**
 * Runs a command and returns its stdout; throws CommandError on failure. `signal` ends the command
 * (SIGTERM) when aborted, and the promise rejects with the signal's reason.
 */
export function run(
  command: string,
  args: readonly string[],
  options: ExecTarget & { input?: string; timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<string> {
  const [cmd, argv] = options.netns ? ['ip', ['netns', 'exec', options.netns, command, ...args]] : [command, [...args]];
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      argv,
      { timeout: options.timeoutMs ?? 30_000, maxBuffer: 256 * 1024 * 1024, signal: options.signal },
      (error, stdout, stderr) => {
        if (options.signal?.aborted) {
          reject(options.signal.reason);
        } else if (error) {
          const code = typeof (error as { code?: unknown }).code === 'number' ? (error as { code: number }).code : null;
          reject(new CommandError(cmd, argv, code, `${stderr}${code === null ? ` ${error.message}` : ''}`));
        } else {
          resolve(stdout);
        }
      },
    );
    if (options.input !== undefined) child.stdin!.end(options.input);
  });
}
