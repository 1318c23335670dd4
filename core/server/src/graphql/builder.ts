/**
 * The Pothos builder. It defines no types: each domain has its own file in `schema/`.
 */
import SchemaBuilder from '@pothos/core';
import ComplexityPlugin from '@pothos/plugin-complexity';
import ErrorsPlugin from '@pothos/plugin-errors';
import RelayPlugin from '@pothos/plugin-relay';
import {
  AddressInUseError,
  CapabilityNotSupportedError,
  ConflictError,
  ForbiddenError,
  NotFoundError,
  PoolExhaustedError,
  PortConflictError,
  QuotaExceededError,
  RateLimitedError,
  SignInFailedError,
  ValidationError,
} from '../support/errors.js';
import { ArgumentChecks } from './argument-checks.js';
import type { GraphQLContext } from './context.js';
import { DeclaredErrors } from './declared-errors.js';

/** Query limits: deeper or costlier operations are refused before they run. */
export const QUERY_LIMITS = { depth: 10, breadth: 60, complexity: 20_000 } as const;

/** Every expected failure type; each mutation's result union lists those it declares (`resultOf`). */
export const ERROR_CLASSES = [
  ValidationError,
  NotFoundError,
  ForbiddenError,
  ConflictError,
  QuotaExceededError,
  PoolExhaustedError,
  AddressInUseError,
  PortConflictError,
  CapabilityNotSupportedError,
  SignInFailedError,
  RateLimitedError,
];

/** The schema builder. */
export const builder = new SchemaBuilder<{
  Context: GraphQLContext;
  DefaultFieldNullability: false;
  DefaultEdgesNullability: false;
  DefaultNodeNullability: false;
  Scalars: {
    ID: { Input: string; Output: string };
    DateTime: { Input: Date; Output: Date };
    BigInt: { Input: bigint; Output: bigint };
    JSON: { Input: unknown; Output: unknown };
    BackendId: { Input: string; Output: string };
  };
}>({
  // ArgumentChecks after ErrorsPlugin: a malformed id in a mutation's input is a typed result;
  // DeclaredErrors between them: an error the mutation does not declare is unexpected, not a result
  plugins: [ErrorsPlugin, DeclaredErrors, ArgumentChecks, RelayPlugin, ComplexityPlugin],
  defaultFieldNullability: false,
  errors: { defaultTypes: [] },
  relay: {
    clientMutationId: 'omit',
    cursorType: 'String',
    nodeQueryOptions: false,
    nodesQueryOptions: false,
    // a connection's page size already multiplies its nodes' cost; its edges list must not again
    edgesFieldOptions: { nullable: false, complexity: { field: 0, multiplier: 1 } },
    nodeFieldOptions: { nullable: false },
  },
  complexity: {
    defaultComplexity: 1,
    defaultListMultiplier: 5,
    limit: QUERY_LIMITS,
  },
});

builder.queryType({});
builder.mutationType({});
builder.subscriptionType({});
