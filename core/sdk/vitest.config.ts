import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // property tests run hundreds of cases: 5 s (vitest's default) is too short on a loaded 2-core machine
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
