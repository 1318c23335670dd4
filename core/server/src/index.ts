/** Public entry of @gatehouse/server. */
export { startController, createContainer, createGatehouseYoga, type Controller, type ControllerOptions, type Logger } from './server.js';
export { openStore, type Store, type StoreConfig, type Database } from './db/database.js';
export { printGatehouseSchema, gatehouseSchema } from './graphql/schema.js';
export * from './errors.js';
