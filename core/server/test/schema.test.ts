/** The committed schema.graphql is exactly what the Pothos schema prints. */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { printGatehouseSchema } from '../src/graphql/schema.js';

it('schema.graphql at the repository root is current (run `npm run schema:print`)', () => {
  const committed = readFileSync(fileURLToPath(new URL('../../../schema.graphql', import.meta.url)), 'utf8');
  expect(printGatehouseSchema()).toBe(committed);
});
