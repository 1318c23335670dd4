/**
 * A minimal but complete Gatehouse plugin. Its "host" is one JSON file that some other program
 * reads (a load balancer's config loader, say): that program forwards ports and filters traffic,
 * so the plugin declares port forwards and firewalls, and no shaping.
 *
 * What it shows: a `DriverPlugin` default export; a configuration checked with `DriverConfigError`
 * paths; capabilities that tell the truth; a full-state, idempotent apply with per-object results;
 * an atomic change (write a temporary file, then rename it); ownership (a file Gatehouse did not
 * write is a `ConflictError` and is never overwritten); release and gc that succeed when there is
 * nothing to do.
 */
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
// A plugin package imports these from '@gatehouse/sdk'; this copy imports the SDK's source so that
// its test runs without a build.
import {
  CapabilityNotSupportedError,
  ConflictError,
  DRIVER_API_VERSION,
  DriverConfigError,
  TransientError,
  diffObservation,
  expectedObservation,
  sortObservation,
  toDriverError,
  validateDesiredState,
  type ApplyResult,
  type DesiredState,
  type DriverCapabilities,
  type DriverContext,
  type DriverError,
  type DriverPlugin,
  type NetworkDriver,
  type ObjectResult,
  type ObservedFirewall,
  type ObservedForward,
  type ObservedState,
} from '../src/index.js';

/** The plugin's configuration. */
export interface JsonFileDriverConfig {
  /** Absolute path of the file this driver owns. */
  path: string;
}

/** Checks a configuration; throws DriverConfigError naming the offending field. */
export function validateConfig(config: unknown): JsonFileDriverConfig {
  if (typeof config !== 'object' || config === null || Array.isArray(config)) throw new DriverConfigError('config', config, 'must be an object');
  const c = config as Record<string, unknown>;
  for (const key of Object.keys(c)) {
    if (key !== 'path') throw new DriverConfigError(`config.${key}`, c[key], 'is not a setting of the json-file plugin');
  }
  if (typeof c.path !== 'string' || !isAbsolute(c.path) || !c.path.endsWith('.json'))
    throw new DriverConfigError('config.path', c.path, 'must be an absolute path ending in .json');
  return { path: c.path };
}

/** Forwards and firewalls, as the consuming program does them; no shaping. NICs are the backend's, not this driver's. */
export const CAPABILITIES: DriverCapabilities = {
  portForwards: { implementation: 'native', protocols: ['tcp', 'udp'], portRanges: true, ipv6: true, sourceAllowLists: true },
  firewall: {
    implementation: 'native',
    directions: ['inbound', 'outbound'],
    actions: ['allow', 'reject', 'drop'],
    priorities: true,
    ipv6: true,
    icmp: true,
  },
  shaping: null,
  nics: { max: 64, hotplug: true, staticAddressing: false },
};

/** The file: a marker saying Gatehouse wrote it, then each instance's forwards and firewall in the SDK's canonical form. */
interface FileContent {
  writtenBy: 'gatehouse';
  instances: Record<string, { forwards: ObservedForward[]; firewall: ObservedFirewall }>;
}

/** The driver. It keeps no memory between calls: every method starts from what the file holds. */
export class JsonFileDriver implements NetworkDriver {
  readonly id = 'json-file';
  readonly apiVersion = DRIVER_API_VERSION;
  readonly capabilities = CAPABILITIES;

  constructor(private readonly config: JsonFileDriverConfig) {}

  /** The backend has no inventory of its own, so there is nothing to discover. */
  async discover(): Promise<{ instances: [] }> {
    return { instances: [] };
  }

  /**
   * Makes the file hold exactly `desired`. Idempotent: the file is rewritten only when its content
   * changes. `repair` needs nothing extra, since nothing remembered is trusted anyway.
   */
  async apply(_ctx: DriverContext, input: { desired: DesiredState; repair?: boolean }): Promise<ApplyResult> {
    const desired = validateDesiredState(input.desired, 'input.desired');
    const current = await this.read();
    const content: FileContent = { writtenBy: 'gatehouse', instances: {} };
    const objects: ObjectResult[] = [];
    for (const instance of desired.instances) {
      const { forwards, firewalls } = expectedObservation({ ...desired, instances: [instance] });
      content.instances[instance.id] = { forwards, firewall: firewalls[0]! };
      for (const nic of instance.nics) objects.push({ objectType: 'nic', objectId: nic.id, status: 'applied' });
      for (const f of instance.portForwards) objects.push({ objectType: 'port_forward', objectId: f.id, status: 'applied' });
      for (const r of instance.firewall.rules) objects.push({ objectType: 'firewall_rule', objectId: r.id, status: 'applied' });
      // the rest of the state still applies; only this object fails
      const unsupported = new CapabilityNotSupportedError('shaping', `json-file plugin: bandwidth limits are not supported on host ${desired.hostName}`);
      for (const b of instance.bandwidth) objects.push({ objectType: 'bandwidth_limit', objectId: b.id, status: 'failed', error: unsupported.toJSON() });
    }
    return { changed: await this.write(content, current.text), objects };
  }

  /** The forwards and firewalls the file holds. */
  async observe(): Promise<{ state: ObservedState }> {
    const entries = Object.values((await this.read()).content.instances);
    return { state: sortObservation({ forwards: entries.flatMap((e) => e.forwards), firewalls: entries.map((e) => e.firewall), shaping: [] }) };
  }

  /** How the file differs from `desired`; bandwidth limits are no drift, since this driver cannot apply them. */
  async drift(_ctx: DriverContext, input: { desired: DesiredState; thorough: boolean }): Promise<{ differences: string[] }> {
    const expected = { ...expectedObservation(input.desired), shaping: [] };
    return { differences: diffObservation(expected, (await this.observe()).state) };
  }

  /** This driver carries no traffic itself, so it has no counters. */
  async stats(): Promise<{ nics: []; forwards: [] }> {
    return { nics: [], forwards: [] };
  }

  /** Removes one instance's entry; succeeds when it is already gone. */
  async release(_ctx: DriverContext, input: { instanceId: string }): Promise<{ released: boolean }> {
    const { content, text } = await this.read();
    if (!Object.hasOwn(content.instances, input.instanceId)) return { released: false };
    delete content.instances[input.instanceId];
    await this.write(content, text);
    return { released: true };
  }

  /** Removes the entries of instances not in `validInstanceIds`, and nothing else. */
  async gc(_ctx: DriverContext, input: { validInstanceIds: readonly string[] }): Promise<{ removedInstanceIds: string[] }> {
    const { content, text } = await this.read();
    const removedInstanceIds = Object.keys(content.instances).filter((id) => !input.validInstanceIds.includes(id));
    for (const id of removedInstanceIds) delete content.instances[id];
    await this.write(content, text);
    return { removedInstanceIds };
  }

  /** The file's content (empty when there is no file) and its text. A file Gatehouse did not write is refused, never touched. */
  private async read(): Promise<{ content: FileContent; text: string | null }> {
    const path = this.config.path;
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { content: { writtenBy: 'gatehouse', instances: {} }, text: null };
      throw fileError(err, 'reading', path);
    }
    let parsed: Partial<FileContent> | undefined;
    try {
      parsed = JSON.parse(text) as Partial<FileContent>;
    } catch {
      parsed = undefined;
    }
    if (parsed?.writtenBy !== 'gatehouse' || typeof parsed.instances !== 'object')
      throw new ConflictError(`Failed writing ${path}: the file exists and was not written by Gatehouse; move it away`);
    return { content: parsed as FileContent, text };
  }

  /** Replaces the file in one step (removes it when no instance is left); returns whether anything changed. */
  private async write(content: FileContent, current: string | null): Promise<boolean> {
    const path = this.config.path;
    const text = Object.keys(content.instances).length === 0 ? null : `${JSON.stringify(content, null, 2)}\n`;
    if (text === current) return false;
    const temporary = `${path}.${process.pid}.tmp`;
    try {
      if (text === null) {
        await rm(path, { force: true });
      } else {
        // readers see the old file or the new one, never half of it
        await writeFile(temporary, text);
        await rename(temporary, path);
      }
    } catch (err) {
      await rm(temporary, { force: true }).catch(() => undefined);
      throw fileError(err, 'writing', path);
    }
    return true;
  }
}

/** A file-system failure as a driver error: a busy or full disk may clear up; anything else is unexpected. */
function fileError(err: unknown, action: string, path: string): DriverError {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'EAGAIN' || code === 'EBUSY' || code === 'ENOSPC' || code === 'EMFILE')
    return new TransientError(`Failed ${action} ${path}: ${code}`, { cause: err });
  return toDriverError(err);
}

/** What the agent loads (`--plugin` with this module's package name or built file). */
const plugin: DriverPlugin = {
  id: 'json-file',
  apiVersion: DRIVER_API_VERSION,
  createDriver: (config) => new JsonFileDriver(validateConfig(config)),
};
export default plugin;
