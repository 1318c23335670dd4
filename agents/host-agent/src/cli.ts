#!/usr/bin/env node
/**
 * The agent command (also `gatehouse agent` of the `gatehouse` command, core/cli):
 *
 *   gatehouse agent --controller URL[,URL…] --token T --plugin linux [--host ID] [--plugin-config JSON]
 *                   [--drift-interval MS] [--discover-interval MS] [--tunnel-ports 22,2222] [--state-dir DIR] [--stats-interval MS]
 *
 * `--controller`: the controller's URL, or the URLs of its replicas (comma-separated, or the
 * option repeated): when the connection is lost the agent tries the next one, so it moves to a
 * live replica within a fraction of a second of its replica dying.
 * `--tunnel-ports`: the ports of this host's instances the controller may open SSH tunnel streams
 * to (default 22). `--state-dir` (default /var/lib/gatehouse-agent) keeps the last applied
 * desired state, applied at the next start before connecting (state-cache.ts).
 * The token may come from GATEHOUSE_AGENT_TOKEN instead (keeps it out of `ps`). Exits 2 on bad
 * arguments or a plugin that cannot load, 3 when the controller refuses the token.
 */
import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { loadDriver } from '@gatehouse/sdk';
import { HostAgent } from './agent.js';
import { websocketUrl } from './controller.js';
import { DEFAULT_STATE_DIR } from './state-cache.js';

const USAGE =
  'usage: gatehouse agent --controller URL[,URL...] --token T --plugin linux|docker|lxd|proxmox|esxi|PACKAGE|PATH [--host ID] [--plugin-config JSON] [--drift-interval MS] [--discover-interval MS] [--tunnel-ports 22,2222] [--state-dir DIR] [--stats-interval MS]';

/**
 * The module `--plugin` names, loaded at run time (this package depends on no plugin): a built-in
 * id (`linux`) → @gatehouse/plugin-linux; a path (`./my-plugin`, absolute) → its file URL; a
 * package name (`@acme/gatehouse-pve`) as given.
 */
export function pluginSpecifier(name: string): string {
  if (/^[a-z][a-z0-9-]*$/.test(name)) return `@gatehouse/plugin-${name}`;
  if (name.startsWith('.') || isAbsolute(name)) return pathToFileURL(resolve(name)).href;
  return name;
}

export async function runAgent(argv: string[]): Promise<void> {
  const fail = (message: string): never => {
    console.error(`${message}\n${USAGE}`);
    process.exit(2);
  };
  const options = {
    controller: { type: 'string', multiple: true },
    token: { type: 'string', default: process.env.GATEHOUSE_AGENT_TOKEN },
    plugin: { type: 'string', default: 'linux' },
    host: { type: 'string' },
    'plugin-config': { type: 'string' },
    'drift-interval': { type: 'string', default: '2000' },
    'tunnel-ports': { type: 'string', default: '22' },
    'discover-interval': { type: 'string', default: '60000' },
    'state-dir': { type: 'string', default: DEFAULT_STATE_DIR },
    'stats-interval': { type: 'string', default: '1000' },
  } as const;
  let values!: ReturnType<typeof parseArgs<{ args: string[]; options: typeof options }>>['values'];
  try {
    values = parseArgs({ args: argv, options }).values;
  } catch (err) {
    fail((err as Error).message); // an unknown or incomplete option
  }
  const controllers = (values.controller ?? []).flatMap((c) => c.split(',')).map((c) => c.trim());
  if (controllers.length === 0) fail('--controller is required');
  if (controllers.length > 16) fail(`--controller ${controllers.join(',')} names more than 16 URLs`);
  for (const c of controllers) {
    try {
      websocketUrl(c);
    } catch {
      fail(`--controller ${c || '""'} must be an http(s) or ws(s) URL`);
    }
  }
  if (!values.token) fail('--token (or GATEHOUSE_AGENT_TOKEN) is required');
  const driftIntervalMs = Number(values['drift-interval']);
  if (!Number.isInteger(driftIntervalMs) || driftIntervalMs < 100) fail(`--drift-interval ${values['drift-interval']} must be an integer of at least 100 (ms)`);
  const ports = values['tunnel-ports']!.split(',').map((p) => Number(p.trim()));
  if (ports.length > 64 || ports.some((p) => !Number.isInteger(p) || p < 1 || p > 65535))
    fail(`--tunnel-ports ${values['tunnel-ports']} must be a comma-separated list of at most 64 ports (1-65535)`);
  const discoverIntervalMs = Number(values['discover-interval']);
  if (!Number.isInteger(discoverIntervalMs) || discoverIntervalMs < 100)
    fail(`--discover-interval ${values['discover-interval']} must be an integer of at least 100 (ms)`);
  const stateDir = values['state-dir']!;
  if (!isAbsolute(stateDir)) fail(`--state-dir ${stateDir} must be an absolute path`);
  const statsIntervalMs = Number(values['stats-interval']);
  if (!Number.isInteger(statsIntervalMs) || (statsIntervalMs !== 0 && statsIntervalMs < 100))
    fail(`--stats-interval ${values['stats-interval']} must be 0 (no traffic reports) or an integer of at least 100 (ms)`);
  let config: unknown;
  try {
    config = values['plugin-config'] === undefined ? undefined : JSON.parse(values['plugin-config']);
  } catch (err) {
    fail(`--plugin-config is not JSON: ${(err as Error).message}`);
  }
  const abort = new AbortController();
  const ctx = {
    logger: { debug() {}, info: console.info, warn: console.warn, error: console.error },
    signal: abort.signal,
    host: { id: values.host ?? '', name: '', publicAddresses: [] },
  };
  const driver = await loadDriver(pluginSpecifier(values.plugin!), config, ctx).catch((err: unknown) =>
    fail(`plugin ${values.plugin}: ${(err as Error).message}`),
  );
  const agent = new HostAgent({
    controllerUrl: controllers,
    token: values.token!,
    hostId: values.host,
    driver,
    driftIntervalMs,
    discoverIntervalMs,
    tunnel: { ports },
    stateDir,
    statsIntervalMs,
  });
  let refused = false;
  agent.on('refused', () => {
    refused = true;
    void agent.stop().finally(() => process.exit(3));
  });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      console.info(`[agent] received ${signal}, stopping (the host keeps what was applied)`);
      void agent.stop().finally(() => process.exit(0));
    });
  }
  try {
    await agent.start();
  } catch (err) {
    // a refused token also fails the start's first request: the stop under way exits with 3
    // (stopping ends the driver's nft process, which takes longer than that failure)
    if (refused) return;
    throw err;
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  runAgent(process.argv.slice(2)).catch((err: unknown) => {
    console.error(`[agent] ${(err as Error).message}`);
    process.exit(1);
  });
}
