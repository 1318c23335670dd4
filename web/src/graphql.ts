/**
 * Operations typed from `../schema.graphql`: `graphql-env.d.ts` is generated from it before every
 * build and typecheck (`gql.tada generate output`), so a schema change that breaks an operation
 * breaks `npm run typecheck`.
 */
import { initGraphQLTada } from 'gql.tada';
import type { introspection } from './graphql-env.d.ts';

/** Tags a GraphQL document and infers its result and variables from the schema. */
export const graphql = initGraphQLTada<{
  // fragments are plain selections here: a component reads what its query spreads
  disableMasking: true;
  introspection: introspection;
  scalars: { ID: string; DateTime: string; BigInt: string; JSON: unknown; BackendId: string };
}>();

export type { FragmentOf, ResultOf, VariablesOf } from 'gql.tada';
export { readFragment } from 'gql.tada';

/** The fields of every typed error result, spread into each mutation: `...ErrorFields`. */
export const ErrorFields = graphql(`
  fragment ErrorFields on Error {
    code
    message
    field
    value
  }
`);
