/** Vitest: the UI's logic and components, rendered to markup in Node (the browser test is test/e2e). */
import { defineConfig } from 'vitest/config';

// a config file is the one place a default export is required (Vitest loads it so)
export default defineConfig({
  test: { include: ['test/**/*.test.{ts,tsx}'], testTimeout: 120_000, hookTimeout: 120_000 },
});
