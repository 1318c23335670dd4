/** Scalars: DateTime (ISO 8601), BigInt (decimal string, for IPv6-sized counts) and JSON. */
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
