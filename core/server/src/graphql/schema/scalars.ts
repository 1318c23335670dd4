/** Scalars: DateTime (ISO 8601), BigInt (decimal string, for IPv6-sized counts), JSON and BackendId. */
import { GraphQLError, Kind } from 'graphql';
import { builder } from '../builder.js';

builder.scalarType('DateTime', {
  description: 'An instant, as an ISO 8601 string in UTC.',
  serialize: (value) => value.toISOString(),
  parseValue: (value) => {
    const date = typeof value === 'string' ? new Date(value) : new Date(NaN);
    if (Number.isNaN(date.getTime())) throw new GraphQLError(`DateTime ${JSON.stringify(value)} is not an ISO 8601 date`);
    return date;
  },
});

builder.scalarType('BigInt', {
  description: 'An integer of any size, as a decimal string (pool sizes of IPv6 pools exceed 2^53).',
  serialize: (value) => value.toString(),
  parseValue: (value) => {
    if (typeof value === 'number' && Number.isSafeInteger(value)) return BigInt(value);
    if (typeof value === 'string' && /^-?[0-9]{1,40}$/.test(value)) return BigInt(value);
    throw new GraphQLError(`BigInt ${JSON.stringify(value)} is not an integer`);
  },
  parseLiteral: (ast) => {
    if ((ast.kind === Kind.STRING || ast.kind === Kind.INT) && /^-?[0-9]{1,40}$/.test(ast.value)) return BigInt(ast.value);
    throw new GraphQLError('BigInt literal is not an integer');
  },
});

builder.scalarType('JSON', {
  description: 'A JSON value (audit snapshots).',
  serialize: (value) => value,
  parseValue: (value) => value,
});

// the enum names clients sent before backends were plugin ids (`backend: LINUX`)
const LEGACY_BACKENDS: Record<string, string> = { LINUX: 'linux', DOCKER: 'docker', LXD: 'lxd', PROXMOX: 'proxmox', ESXI: 'esxi' };

builder.scalarType('BackendId', {
  description:
    'The id of the plugin a host runs: a lower-case letter, then up to 62 lower-case letters, digits or "-". Built in: "linux", "docker", "lxd", "proxmox", "esxi"; any other id names a third-party plugin. As input, the former enum values LINUX, DOCKER, LXD, PROXMOX and ESXI are accepted for the built-in ones.',
  serialize: (value) => value,
  parseValue: (value) => {
    if (typeof value !== 'string') throw new GraphQLError(`BackendId ${JSON.stringify(value)} is not a string`);
    return LEGACY_BACKENDS[value] ?? value;
  },
  parseLiteral: (ast) => {
    if (ast.kind === Kind.STRING) return ast.value;
    const legacy = ast.kind === Kind.ENUM ? LEGACY_BACKENDS[ast.value] : undefined;
    if (legacy) return legacy;
    throw new GraphQLError('BackendId literal must be a string such as "linux"');
  },
});
