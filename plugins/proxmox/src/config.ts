/**
 * The Proxmox VE plugin's configuration (`--plugin-config`), checked at the boundary into a typed
 * value: any unknown field or bad value is refused with `DriverConfigError` naming it. TLS is
 * verified one way or another (a pinned SHA-256 fingerprint, a CA file, or the system's CAs);
 * there is no setting that ignores certificate errors.
 */
import { isAbsolute } from 'node:path';
import { hostname } from 'node:os';
import { DriverConfigError } from '@gatehouse/sdk';

/** The plugin's configuration. */
export interface ProxmoxDriverConfig {
  /** The PVE API's origin, `https://host:8006` (no path: `/api2/json` is added). */
  url: string;
  /** The API token's id, `USER@REALM!TOKENID`. */
  tokenId: string;
  /** The token's secret (a UUID). */
  secret: string;
  /** The node's certificate's SHA-256 fingerprint (`AA:BB:…`, 32 bytes), as `pvenode cert info` prints it. */
  fingerprint?: string;
  /** A PEM file of the CA that signed the node's certificate (`/etc/pve/pve-root-ca.pem`). */
  caFile?: string;
  /** The PVE node this agent runs on: its taps and veths are the ones the dataplane can reach (default: this host's short name). */
  node: string;
  /** The network namespace the node's bridges and taps live in, when not the agent's own (tests). */
  hostNetns?: string;
  /** How long one API request may take, in milliseconds (default 30,000). */
  timeoutMs: number;
  /** How long an asynchronous PVE task (a hot-plug) may run, in milliseconds (default 120,000). */
  taskTimeoutMs: number;
}

const FIELDS = new Set(['url', 'tokenId', 'secret', 'fingerprint', 'caFile', 'node', 'hostNetns', 'timeoutMs', 'taskTimeoutMs']);
/** `USER@REALM!TOKENID`, as PVE's `pve-tokenid` format allows. */
const TOKEN_ID = /^[^\s:/@!]{1,60}@[A-Za-z][A-Za-z0-9.\-_]{1,31}![A-Za-z][A-Za-z0-9.\-_]{1,63}$/;
/** PVE's `pve-node` format. */
export const NODE_NAME = /^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$/;

function integer(c: Record<string, unknown>, key: string, min: number, max: number, fallback: number): number {
  const v = c[key];
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
    throw new DriverConfigError(`config.${key}`, v, `must be an integer number of milliseconds from ${min} to ${max}`);
  return v;
}

/** Checks a configuration value; throws DriverConfigError with the field's path. */
export function validateConfig(config: unknown): ProxmoxDriverConfig {
  if (typeof config !== 'object' || config === null || Array.isArray(config)) throw new DriverConfigError('config', config, 'must be an object');
  const c = config as Record<string, unknown>;
  for (const key of Object.keys(c)) {
    if (!FIELDS.has(key)) throw new DriverConfigError(`config.${key}`, c[key], 'is not a setting of the proxmox plugin');
  }
  let url: URL | undefined;
  try {
    url = typeof c.url === 'string' ? new URL(c.url) : undefined;
  } catch {
    url = undefined;
  }
  if (!url || url.protocol !== 'https:' || (url.pathname !== '/' && url.pathname !== '') || url.search || url.username)
    throw new DriverConfigError('config.url', c.url, 'must be the https:// origin of the PVE API, e.g. https://pve1.example.net:8006');
  if (typeof c.tokenId !== 'string' || !TOKEN_ID.test(c.tokenId))
    throw new DriverConfigError('config.tokenId', c.tokenId, 'must be an API token id USER@REALM!TOKENID, e.g. gatehouse@pve!agent');
  // the secret is never echoed back in an error
  if (typeof c.secret !== 'string' || !/^[A-Za-z0-9-]{8,128}$/.test(c.secret))
    throw new DriverConfigError('config.secret', c.secret === undefined ? undefined : '(hidden)', "must be the token's secret (a UUID)");
  if (c.fingerprint !== undefined && (typeof c.fingerprint !== 'string' || !/^([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$/.test(c.fingerprint)))
    throw new DriverConfigError('config.fingerprint', c.fingerprint, "must be the certificate's SHA-256 fingerprint, 32 hex bytes separated by colons");
  if (c.caFile !== undefined && (typeof c.caFile !== 'string' || !isAbsolute(c.caFile)))
    throw new DriverConfigError('config.caFile', c.caFile, 'must be an absolute path to a PEM file');
  if (c.fingerprint !== undefined && c.caFile !== undefined)
    throw new DriverConfigError('config.caFile', c.caFile, 'cannot be combined with config.fingerprint: pin the certificate or trust a CA, not both');
  if (c.node !== undefined && (typeof c.node !== 'string' || c.node.length > 63 || !NODE_NAME.test(c.node)))
    throw new DriverConfigError('config.node', c.node, 'must be a PVE node name (letters, digits and inner "-")');
  if (c.hostNetns !== undefined && (typeof c.hostNetns !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(c.hostNetns)))
    throw new DriverConfigError('config.hostNetns', c.hostNetns, 'must be a name of letters, digits, ".", "_" or "-" (at most 64)');
  return {
    url: url.origin,
    tokenId: c.tokenId,
    secret: c.secret,
    node: (c.node as string | undefined) ?? hostname().split('.')[0]!,
    timeoutMs: integer(c, 'timeoutMs', 1_000, 600_000, 30_000),
    taskTimeoutMs: integer(c, 'taskTimeoutMs', 1_000, 3_600_000, 120_000),
    ...(c.fingerprint !== undefined ? { fingerprint: (c.fingerprint as string).toUpperCase() } : {}),
    ...(c.caFile !== undefined ? { caFile: c.caFile as string } : {}),
    ...(c.hostNetns !== undefined ? { hostNetns: c.hostNetns as string } : {}),
  };
}
