import { createRequire } from 'node:module';
import { defineConfig } from 'vitest/config';
import { isPostgresWriteDefect } from './src/db/postgres-write-defect.js';

const require = createRequire(import.meta.url);

export default defineConfig({
  resolve: {
    // graphql 16 ships CJS (main) and ESM (module); Node loads the CJS copy for Pothos and yoga,
    // so the tests must too, or schema objects cross two copies of graphql
    alias: [{ find: /^graphql$/, replacement: require.resolve('graphql') }],
  },
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    setupFiles: ['reflect-metadata'],
    // postgres.js 3.4.9 writes to a socket its connection already dropped when a server restarts
    // under traffic (porsager/postgres#1154, #1208; fixes #1168, #1209 not released): an uncaught
    // TypeError from a setImmediate in the driver. The restart tests (postgres-restart.test.ts) meet
    // it; it is shown, not counted, so that their own assertions decide. A controller process
    // (`gatehouse serve` on PostgreSQL) logs it and goes on (src/db/postgres-write-defect.ts).
    onUnhandledError(error) {
      const known = isPostgresWriteDefect(error);
      if (known) console.warn(`[vitest] known postgres.js defect (porsager/postgres#1154), not counted: ${error.message}`);
      return !known;
    },
  },
});
