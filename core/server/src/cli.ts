#!/usr/bin/env node
/**
 * The `gatehouse` command.
 *
 *   gatehouse serve [--port 4000] [--host 127.0.0.1] [--data-dir .data/pglite] [--database-url URL]
 *   gatehouse print-schema [--out schema.graphql]
 *
 * `serve` uses PostgreSQL when --database-url or DATABASE_URL is set, otherwise PGlite in the
 * data directory (GATEHOUSE_DATA_DIR, default `.data/pglite`).
 */
import 'reflect-metadata';
import { mkdirSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { printGatehouseSchema } from './graphql/schema.js';
import { startController } from './server.js';

const USAGE = `usage:
  gatehouse serve [--port 4000] [--host 127.0.0.1] [--data-dir DIR] [--database-url URL]
  gatehouse print-schema [--out FILE]`;

async function serve(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: 'string', default: process.env.PORT ?? '4000' },
      host: { type: 'string', default: process.env.GATEHOUSE_HOST ?? '127.0.0.1' },
      'data-dir': { type: 'string', default: process.env.GATEHOUSE_DATA_DIR ?? '.data/pglite' },
      'database-url': { type: 'string', default: process.env.DATABASE_URL },
    },
  });
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
  const controller = await startController({ store, port, host: values.host, logger: console });
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
  const stop = async (signal: string) => {
    console.info(`received ${signal}, stopping`);
    await controller.close();
    process.exit(0);
  };
  process.once('SIGINT', () => void stop('SIGINT'));
  process.once('SIGTERM', () => void stop('SIGTERM'));
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
