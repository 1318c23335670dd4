import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // each file starts its own dockerd in its own namespaces; iperf3 rates need a quiet machine: one file at a time
    fileParallelism: false,
  },
});
