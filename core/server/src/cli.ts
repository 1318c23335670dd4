#!/usr/bin/env node
/**
 * The `gatehouse` command.
 *
 *   gatehouse serve [--port 4000] [--host 127.0.0.1] [--data-dir .data/pglite] [--database-url URL]
 *                   [--agent-heartbeat-ms 10000] [--agent-offline-after-ms 30000] [--no-sandbox]
 *   gatehouse agent --controller URL --token T --plugin linux [--host ID] [--plugin-config JSON]
 *   gatehouse print-schema [--out schema.graphql]
 *
 * `serve` uses PostgreSQL when --database-url or DATABASE_URL is set, otherwise PGlite in the
 * data directory (GATEHOUSE_DATA_DIR, default `.data/pglite`). Run as root, it also creates the
 * sandbox host with its in-process agent (src/sandbox), unless --no-sandbox or GATEHOUSE_SANDBOX=off.
 */
import 'reflect-metadata';
import { mkdirSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { printGatehouseSchema } from './graphql/schema.js';
import type { EmbeddedSandbox } from './sandbox/embedded-sandbox.js';
import { startController, type Controller } from './server.js';

const USAGE = `usage:
  gatehouse serve [--port 4000] [--host 127.0.0.1] [--data-dir DIR] [--database-url URL]
                  [--agent-heartbeat-ms MS] [--agent-offline-after-ms MS] [--no-sandbox]
      As root, also creates a sandbox host (network namespaces gh-sandbox*, two demo instances)
      with an in-process agent; --no-sandbox (or GATEHOUSE_SANDBOX=off) leaves it out.
  gatehouse agent --controller URL --token T --plugin linux [--host ID] [--plugin-config JSON]
                  [--drift-interval MS]
      Runs a host agent (token also from GATEHOUSE_AGENT_TOKEN).
  gatehouse print-schema [--out FILE]`;

function positiveMs(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${flag} ${JSON.stringify(value)} must be a positive integer (milliseconds)`);
  return n;
}

async function serve(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: 'string', default: process.env.PORT ?? '4000' },
      host: { type: 'string', default: process.env.GATEHOUSE_HOST ?? '127.0.0.1' },
      'data-dir': { type: 'string', default: process.env.GATEHOUSE_DATA_DIR ?? '.data/pglite' },
      'database-url': { type: 'string', default: process.env.DATABASE_URL },
      'agent-heartbeat-ms': { type: 'string', default: process.env.GATEHOUSE_AGENT_HEARTBEAT_MS },
      'agent-offline-after-ms': { type: 'string', default: process.env.GATEHOUSE_AGENT_OFFLINE_AFTER_MS },
      'no-sandbox': { type: 'boolean', default: /^(0|off|false|no)$/i.test(process.env.GATEHOUSE_SANDBOX ?? '') },
    },
  });
  const agentPresence = {
    ...(values['agent-heartbeat-ms'] !== undefined ? { heartbeatMs: positiveMs('agent-heartbeat-ms', values['agent-heartbeat-ms']) } : {}),
    ...(values['agent-offline-after-ms'] !== undefined ? { offlineAfterMs: positiveMs('agent-offline-after-ms', values['agent-offline-after-ms']) } : {}),
  };
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port ${JSON.stringify(values.port)} must be an integer from 0 to 65535`);
  const url = values['database-url'];
  let store;
  if (url) {
    store = { kind: 'postgres' as const, url };
  } else {
    const dataDir = resolve(values['data-dir']);
    mkdirSync(dataDir, { recursive: true });
    store = { kind: 'pglite' as const, dataDir };
  }
  const controller = await startController({ store, port, host: values.host, logger: console, agentPresence });
  if (controller.bootstrapSecret) {
    process.stdout.write(
      [
        '',
        'First start: created the user "admin" and this admin API token. It is shown only once; keep it:',
        '',
        `    ${controller.bootstrapSecret}`,
        '',
        `Open ${controller.url.replace('127.0.0.1', 'localhost')} and add the header  {"Authorization": "Bearer ${controller.bootstrapSecret}"}`,
        '',
      ].join('\n'),
    );
  }
  // the sandbox, when it starts, is removed again on every way out
  let sandbox: Promise<EmbeddedSandbox | undefined> = Promise.resolve(undefined);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.info(`received ${signal}, stopping`);
    await (await sandbox.catch(() => undefined))?.stop();
    await controller.close();
    process.exit(0);
  };
  process.once('SIGINT', () => void stop('SIGINT'));
  process.once('SIGTERM', () => void stop('SIGTERM'));
  if (!values['no-sandbox']) {
    sandbox = startEmbeddedSandbox(controller);
    const started = await sandbox;
    if (started) process.once('exit', () => started.stopSync());
  }
}

/** Starts the sandbox and prints what to do with it, or why there is none and what works instead. */
async function startEmbeddedSandbox(controller: Controller): Promise<EmbeddedSandbox | undefined> {
  const { noSandboxInstructions, sandboxPrerequisiteProblem, startSandbox } = await import('./sandbox/embedded-sandbox.js');
  const problem = sandboxPrerequisiteProblem();
  if (problem) {
    process.stdout.write(noSandboxInstructions(problem, controller.url));
    return undefined;
  }
  try {
    const sandbox = await startSandbox(controller, { logger: console });
    process.stdout.write(sandbox.instructions);
    return sandbox;
  } catch (err) {
    process.stdout.write(noSandboxInstructions(`the sandbox did not start: ${(err as Error).message}`, controller.url));
    return undefined;
  }
}

function printSchemaCommand(argv: string[]): void {
  const { values } = parseArgs({ args: argv, options: { out: { type: 'string' } } });
  const sdl = printGatehouseSchema();
  if (values.out) writeFileSync(values.out, sdl);
  else process.stdout.write(sdl);
}

async function main(): Promise<void> {
  const [command, ...rest] = process.argv.slice(2);
  switch (command) {
    case 'serve':
      return serve(rest);
    case 'agent':
      // the host agent's own command, so one installed `gatehouse` runs both sides
      return (await import('@gatehouse/host-agent')).runAgent(rest);
    case 'print-schema':
      return printSchemaCommand(rest);
    default:
      console.error(USAGE);
      process.exit(command ? 2 : 0);
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
