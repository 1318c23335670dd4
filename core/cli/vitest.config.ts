import { createRequire } from 'node:module';
import { defineConfig } from 'vitest/config';

const require = createRequire(import.meta.url);

export default defineConfig({
  resolve: {
    // as in core/server: the in-process controller of the replica test must load the one CJS copy of graphql its Pothos schema uses
    alias: [{ find: /^graphql$/, replacement: require.resolve('graphql') }],
  },
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // controller processes, the sandbox's namespaces and Caddy's ports are machine-wide: one file at a time
    fileParallelism: false,
  },
});
