/**
 * Test support of @gatehouse/server (`@gatehouse/server/testing`): an in-process API with an
 * admin, fixtures, the PGlite and PostgreSQL stores every store test runs on, and GraphQL over
 * HTTP. The server's own tests and the CLI's process tests share it.
 */
export * from './api.js';
export * from './fixtures.js';
export * from './http.js';
export * from './stores.js';
export * from './postgres-server.js';
export * from './seed.js';
