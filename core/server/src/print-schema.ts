/**
 * Prints the GraphQL schema (`npm run schema:print` writes the root schema.graphql with it):
 *
 *   tsx src/print-schema.ts [--out FILE]
 */
import 'reflect-metadata';
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { printGatehouseSchema } from './graphql/schema.js';

const { values } = parseArgs({ options: { out: { type: 'string' } } });
const sdl = printGatehouseSchema();
if (values.out) writeFileSync(values.out, sdl);
else process.stdout.write(sdl);
