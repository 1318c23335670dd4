/**
 * The LXD plugin's configuration (`--plugin-config`), checked at the boundary into a typed value:
 * any unknown field or bad value is refused with `DriverConfigError` naming it.
 */
import { isAbsolute } from 'node:path';
import { DriverConfigError } from '@gatehouse/sdk';

/** The plugin's configuration. */
export interface LxdDriverConfig {
  /** LXD's unix socket (default `/var/lib/lxd/unix.socket`, or `$LXD_DIR/unix.socket` when the agent has LXD_DIR). */
  socket: string;
  /**
   * The network namespace LXD's bridges and veths live in, when LXD runs in one (tests, a sandbox):
   * nftables, tc and interface lookups run there. Default: the agent's own namespace.
   */
  hostNetns?: string;
  /** How long one LXD request (or operation) may take, in milliseconds (default 60,000). */
  timeoutMs: number;
}

const FIELDS = new Set(['socket', 'hostNetns', 'timeoutMs']);

/** Default socket: the one the agent's environment points at, else Debian's. */
function defaultSocket(): string {
  const dir = process.env.LXD_DIR;
  return dir && isAbsolute(dir) ? `${dir}/unix.socket` : '/var/lib/lxd/unix.socket';
}

/** Checks a configuration value (undefined: all defaults); throws DriverConfigError with the field's path. */
export function validateConfig(config: unknown): LxdDriverConfig {
  if (config === undefined || config === null) return { socket: defaultSocket(), timeoutMs: 60_000 };
  if (typeof config !== 'object' || Array.isArray(config)) throw new DriverConfigError('config', config, 'must be an object');
  const c = config as Record<string, unknown>;
  for (const key of Object.keys(c)) {
    if (!FIELDS.has(key)) throw new DriverConfigError(`config.${key}`, c[key], 'is not a setting of the lxd plugin');
  }
  if (c.socket !== undefined && (typeof c.socket !== 'string' || !isAbsolute(c.socket) || c.socket.length > 107))
    throw new DriverConfigError('config.socket', c.socket, 'must be an absolute path to LXD unix socket (at most 107 characters)');
  if (c.hostNetns !== undefined && (typeof c.hostNetns !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(c.hostNetns)))
    throw new DriverConfigError('config.hostNetns', c.hostNetns, 'must be a name of letters, digits, ".", "_" or "-" (at most 64)');
  if (c.timeoutMs !== undefined && (typeof c.timeoutMs !== 'number' || !Number.isInteger(c.timeoutMs) || c.timeoutMs < 1_000 || c.timeoutMs > 600_000))
    throw new DriverConfigError('config.timeoutMs', c.timeoutMs, 'must be an integer number of milliseconds from 1000 to 600000');
  return {
    socket: (c.socket as string | undefined) ?? defaultSocket(),
    timeoutMs: (c.timeoutMs as number | undefined) ?? 60_000,
    ...(c.hostNetns !== undefined ? { hostNetns: c.hostNetns as string } : {}),
  };
}
