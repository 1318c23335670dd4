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
import { DEFAULT_PAGE, MAX_PAGE } from './pagination.js';
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

/** The builder's schema types, for helpers that build fields outside a schema file (`countedPageTypes`). */
export type BuilderTypes = typeof builder extends PothosSchemaTypes.SchemaBuilder<infer Types> ? Types : never;

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
    edgesFieldOptions: {
      nullable: false,
      complexity: { field: 0, multiplier: 1 },
      description: 'The objects of this page, each with its cursor, in the order the list is sorted.',
    },
    nodeFieldOptions: { nullable: false, description: 'The object.' },
    cursorFieldOptions: { description: "The object's position: pass it as `after` to get the objects that follow it." },
    pageInfoFieldOptions: { description: 'Whether more objects follow this page, and the cursors to fetch them.' },
    pageInfoTypeOptions: { description: 'Where a page lies in the list. Pages are fetched forwards only, with `first` and `after`.' },
    hasNextPageFieldOptions: { description: 'True when more objects follow: fetch them with `after: endCursor`.' },
    hasPreviousPageFieldOptions: { description: 'Always false: pages are fetched forwards only.' },
    startCursorFieldOptions: { description: "The first object's cursor; null for an empty page." },
    endCursorFieldOptions: { description: "The last object's cursor (pass it as `after` for the next page); null for an empty page." },
    firstArgOptions: { description: `Page size: 0 to ${MAX_PAGE} objects. Default ${DEFAULT_PAGE}.` },
    afterArgOptions: { description: "Start after this cursor (a previous page's `pageInfo.endCursor`). Absent: from the beginning." },
    lastArgOptions: { description: 'Not supported (pages go forwards only): any value is refused with VALIDATION_FAILED. Use `first`.' },
    beforeArgOptions: { description: 'Not supported (pages go forwards only): any value is refused with VALIDATION_FAILED. Use `after`.' },
  },
  complexity: {
    defaultComplexity: 1,
    defaultListMultiplier: 5,
    limit: QUERY_LIMITS,
  },
});

builder.queryType({ description: 'Reads. Every query needs a bearer token; users see their own objects, admins everything.' });
builder.mutationType({
  description:
    'Changes. Each mutation either succeeds (its `…Payload`) or returns one of the typed errors it lists and changes nothing; every change is audited.',
});
builder.subscriptionType({ description: 'Live feeds over graphql-ws or server-sent events.' });
