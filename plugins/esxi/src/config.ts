/**
 * The ESXi plugin's configuration (`--plugin-config`), checked at the boundary into a typed value:
 * an unknown field or a bad value is refused with `DriverConfigError` naming it.
 */
import { readFileSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { DriverConfigError } from '@gatehouse/sdk';
import { normalizeThumbprint, type NicModel, type VsphereEndpoint } from './vsphere/index.js';

/** The plugin's configuration. */
export interface EsxiDriverConfig {
  /** The ESXi host's SDK endpoint (`https://esxi.example:443/sdk`). */
  url: string;
  /** A local ESXi user with the role the README lists (not root). */
  username: string;
  password: string;
  /** The SHA-256 thumbprint of the host's certificate (`AA:BB:…`, 32 pairs); or `caFile`. */
  thumbprint?: string;
  /** A PEM file of the CA that signed the host's certificate; or `thumbprint`. */
  caFile?: string;
  /** The network namespace the gateway's dataplane runs in (tests, a sandbox); default the agent's own. */
  hostNetns?: string;
  /** The model of the NICs Gatehouse adds (default `vmxnet3`). */
  nicModel: 'vmxnet3' | 'e1000e';
  /** How long one vSphere request or task may take, in milliseconds (default 60,000). */
  timeoutMs: number;
}

const FIELDS = new Set(['url', 'username', 'password', 'thumbprint', 'caFile', 'hostNetns', 'nicModel', 'timeoutMs']);

/** Checks a configuration value; throws DriverConfigError with the field's path. */
export function validateConfig(config: unknown): EsxiDriverConfig {
  if (typeof config !== 'object' || config === null || Array.isArray(config)) throw new DriverConfigError('config', config, 'must be an object');
  const c = config as Record<string, unknown>;
  for (const key of Object.keys(c)) if (!FIELDS.has(key)) throw new DriverConfigError(`config.${key}`, c[key], 'is not a setting of the esxi plugin');
  let url: URL | undefined;
  try {
    url = typeof c.url === 'string' ? new URL(c.url) : undefined;
  } catch {
    url = undefined;
  }
  if (!url || url.protocol !== 'https:' || url.username || url.password || url.search || url.hash)
    throw new DriverConfigError('config.url', c.url, "must be an https URL of the host's SDK endpoint without credentials (https://esxi.example/sdk)");
  if (typeof c.username !== 'string' || c.username === '' || c.username.length > 256)
    throw new DriverConfigError('config.username', c.username, 'must be a user name');
  if (typeof c.password !== 'string' || c.password === '' || c.password.length > 1024)
    throw new DriverConfigError('config.password', c.password === undefined ? undefined : '(hidden)', 'must be a non-empty string');
  if ((c.thumbprint === undefined) === (c.caFile === undefined))
    throw new DriverConfigError('config.thumbprint', c.thumbprint, 'or config.caFile must be given, and not both');
  if (c.thumbprint !== undefined && (typeof c.thumbprint !== 'string' || !/^([0-9a-fA-F]{2}:?){31}[0-9a-fA-F]{2}$/.test(c.thumbprint)))
    throw new DriverConfigError('config.thumbprint', c.thumbprint, 'must be a SHA-256 thumbprint: 32 hex pairs, colons optional');
  if (c.caFile !== undefined && (typeof c.caFile !== 'string' || !isAbsolute(c.caFile)))
    throw new DriverConfigError('config.caFile', c.caFile, 'must be an absolute path to a PEM file');
  if (c.hostNetns !== undefined && (typeof c.hostNetns !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(c.hostNetns)))
    throw new DriverConfigError('config.hostNetns', c.hostNetns, 'must be a name of letters, digits, ".", "_" or "-" (at most 64)');
  if (c.nicModel !== undefined && c.nicModel !== 'vmxnet3' && c.nicModel !== 'e1000e')
    throw new DriverConfigError('config.nicModel', c.nicModel, 'must be "vmxnet3" or "e1000e"');
  if (c.timeoutMs !== undefined && (typeof c.timeoutMs !== 'number' || !Number.isInteger(c.timeoutMs) || c.timeoutMs < 1_000 || c.timeoutMs > 600_000))
    throw new DriverConfigError('config.timeoutMs', c.timeoutMs, 'must be an integer number of milliseconds from 1000 to 600000');
  return {
    url: url.href,
    username: c.username,
    password: c.password,
    ...(c.thumbprint !== undefined ? { thumbprint: normalizeThumbprint(c.thumbprint as string) } : { caFile: c.caFile as string }),
    ...(c.hostNetns !== undefined ? { hostNetns: c.hostNetns as string } : {}),
    nicModel: (c.nicModel as EsxiDriverConfig['nicModel'] | undefined) ?? 'vmxnet3',
    timeoutMs: (c.timeoutMs as number | undefined) ?? 60_000,
  };
}

/** The client's endpoint from a checked configuration (reads the CA file). */
export function endpointOf(config: EsxiDriverConfig): VsphereEndpoint {
  let tls: VsphereEndpoint['tls'];
  if (config.thumbprint) tls = { thumbprint: config.thumbprint };
  else {
    try {
      tls = { ca: readFileSync(config.caFile!, 'utf8') };
    } catch (err) {
      throw new DriverConfigError('config.caFile', config.caFile, `cannot be read: ${(err as Error).message}`);
    }
  }
  return { url: new URL(config.url), username: config.username, password: config.password, tls, timeoutMs: config.timeoutMs };
}

/** The vSphere type of a configured NIC model. */
export function nicModelType(model: EsxiDriverConfig['nicModel']): NicModel {
  return model === 'vmxnet3' ? 'VirtualVmxnet3' : 'VirtualE1000e';
}
