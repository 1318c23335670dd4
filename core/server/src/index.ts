/** Public entry of @gatehouse/server. */
export { startController, createContainer, createGatehouseYoga, type Controller, type ControllerOptions, type Logger } from './server.js';
export { openStore, type Store, type StoreConfig, type Database } from './db/database.js';
export { printGatehouseSchema, gatehouseSchema } from './graphql/schema.js';
export * from './support/errors.js';
export { systemActor, type Actor } from './auth/actor.js';
export { PoolService } from './services/pool-service.js';
export { InstanceService } from './services/instance-service.js';
export { HostService } from './services/host-service.js';
export { UserService } from './services/user-service.js';
export { rowsOf } from './db/database.js';
