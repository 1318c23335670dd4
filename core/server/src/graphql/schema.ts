/** Assembles the GraphQL schema from the domain files. */
import { lexicographicSortSchema, printSchema, type GraphQLSchema } from 'graphql';
import { builder } from './builder.js';
import './schema/scalars.js';
import './schema/errors.js';
import './schema/users.js';
import './schema/sessions.js';
import './schema/hosts.js';
import './schema/host-agents.js';
import './schema/drivers.js';
import './schema/pools.js';
import './schema/instances.js';
import './schema/port-forwards.js';
import './schema/port-forward-diagnosis.js';
import './schema/firewall.js';
import './schema/bandwidth.js';
import './schema/web-proxies.js';
import './schema/desired-state.js';
import './schema/audit.js';
import './schema/ssh.js';
import './schema/traffic.js';

let built: GraphQLSchema | undefined;

/** The executable schema (built once). */
export function gatehouseSchema(): GraphQLSchema {
  built ??= builder.toSchema();
  return built;
}

/** The SDL committed as `schema.graphql`. */
export function printGatehouseSchema(): string {
  return `${printSchema(lexicographicSortSchema(gatehouseSchema()))}\n`;
}
