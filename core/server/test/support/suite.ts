/** Registers the hooks that give a describe block a fresh store, its API and one host. */
import { afterAll, beforeAll } from 'vitest';
import { createTestApi, type TestApi } from '../../src/testing/api.js';
import { createHost } from '../../src/testing/fixtures.js';
import type { StoreBackend } from '../../src/testing/stores.js';

/** Filled in by `beforeAll`; read it inside tests. */
export interface SuiteContext {
  api: TestApi;
  hostId: string;
}

/** Opens the backend's store before the block's tests and closes (and drops) it after them. */
export function useStoreApi(backend: StoreBackend, hostName: string): SuiteContext {
  const ctx = {} as SuiteContext;
  let cleanup: (() => Promise<void>) | undefined;
  beforeAll(async () => {
    const opened = await backend.open();
    cleanup = opened.cleanup;
    ctx.api = await createTestApi(opened.store);
    ctx.hostId = await createHost(ctx.api.admin, hostName);
  });
  afterAll(async () => cleanup?.());
  return ctx;
}
