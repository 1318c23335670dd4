/** The Docker plugin's configuration (`--plugin-config`), checked at the boundary. */
import { isAbsolute } from 'node:path';
import { DriverConfigError } from '@gatehouse/sdk';

/** What the plugin is configured with. */
export interface DockerDriverConfig {
  /** The Engine API's unix socket (default `/var/run/docker.sock`). */
  socketPath: string;
  /**
   * The network namespace dockerd runs in (its bridges, veths and iptables rules), named as for
   * `ip netns`; the dataplane and every interface lookup run there. Default: the agent's own.
   */
  hostNetns?: string;
}

/** The socket dockerd listens on by default. */
export const DEFAULT_SOCKET = '/var/run/docker.sock';

const FIELDS = new Set(['socketPath', 'hostNetns']);

/** Checks a configuration (undefined: all defaults); throws DriverConfigError naming the field. */
export function validateConfig(config: unknown): DockerDriverConfig {
  if (config === undefined || config === null) return { socketPath: DEFAULT_SOCKET };
  if (typeof config !== 'object' || Array.isArray(config)) throw new DriverConfigError('config', config, 'must be an object');
  const c = config as Record<string, unknown>;
  for (const key of Object.keys(c)) {
    if (!FIELDS.has(key)) throw new DriverConfigError(`config.${key}`, c[key], 'is not a setting of the docker plugin (socketPath, hostNetns)');
  }
  const socketPath = c.socketPath ?? DEFAULT_SOCKET;
  // 107 bytes: the longest path a unix socket address holds
  if (typeof socketPath !== 'string' || !isAbsolute(socketPath) || Buffer.byteLength(socketPath) > 107 || socketPath.includes('\0'))
    throw new DriverConfigError('config.socketPath', socketPath, 'must be an absolute path of at most 107 bytes (the Engine API unix socket)');
  const hostNetns = c.hostNetns;
  if (hostNetns !== undefined && (typeof hostNetns !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(hostNetns) || hostNetns === '.' || hostNetns === '..'))
    throw new DriverConfigError('config.hostNetns', hostNetns, 'must be a network namespace name of letters, digits, ".", "_" or "-" (at most 64)');
  return { socketPath, ...(hostNetns !== undefined ? { hostNetns } : {}) };
}
