/** caddy-api-client: a typed client for Caddy's admin API, on Node built-ins only. */
export {
  CaddyAdminClient,
  DEFAULT_TIMEOUT_MS,
  isUnknownId,
  type CaddyAdminClientOptions,
  type CallOptions,
  type ConfigRead,
  type LoadOptions,
  type UpsertOptions,
  type UpsertResult,
  type WriteOptions,
} from './client.js';
export { checkObjectId, configPathSegments, encodeConfigPath, type ConfigPath, type ConfigPathSegment } from './config-path.js';
export type * from './config-types.js';
export * from './errors.js';
export { describeEndpoint, type CaddyAdminEndpoint, type CaddyTcpEndpoint, type CaddyUnixEndpoint } from './transport.js';
