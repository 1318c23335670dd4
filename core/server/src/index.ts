/** Public entry of @gatehouse/server: what the `gatehouse` command (core/cli) and the benches compose. */
// the DI decorators need the polyfill before any service class is defined
import 'reflect-metadata';
export {
  startController,
  createContainer,
  createGatehouseYoga,
  graphiqlByDefault,
  type Controller,
  type ControllerOptions,
  type ControllerProxyOptions,
  type Logger,
} from './server.js';
export { openStore, type Store, type StoreConfig, type Database } from './db/database.js';
export { guardPostgresWriteDefect, isPostgresWriteDefect } from './db/postgres-write-defect.js';
/** The drizzle tables, for composition code that reads the store directly (the CLI's sandbox). */
export * as tables from './db/schema.js';
export { printGatehouseSchema, gatehouseSchema } from './graphql/schema.js';
export * from './support/errors.js';
export { newId } from './support/ids.js';
export { DatabaseToken } from './di/tokens.js';
export { cidrContains, cidrLast, parseCidr, parseIp, rangesOverlap, type IpCidr } from './net/ip.js';
export { caddyBinaryWorks } from './proxy/caddy-process.js';
export { LETS_ENCRYPT_DIRECTORY } from './proxy/caddy-routes.js';
export { systemActor, type Actor } from './auth/actor.js';
export { PoolService } from './services/pool-service.js';
export { InstanceService } from './services/instance-service.js';
export { HostService } from './services/host-service.js';
export { UserService } from './services/user-service.js';
export { PortForwardService } from './services/port-forward-service.js';
export { rowsOf } from './db/database.js';
export { TunnelBroker, TunnelError } from './tunnel/tunnel-broker.js';
export { DEFAULT_SSH_PORT, type JumpServer, type JumpServerOptions } from './ssh/jump-server.js';
export { generateEd25519KeyPair } from './ssh/ed25519.js';
