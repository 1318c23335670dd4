/**
 * Mutation results: `<Name>Result = <Name>Payload | <the errors the mutation declares>`, data under
 * `dataField`. The union is generated from the declaration, so a typed client handles exactly the
 * failures that can happen; an error the mutation does not declare is unexpected and masked (see
 * `graphql/declared-errors.ts`).
 */
import type { ERROR_CLASSES } from '../builder.js';

/** One of the expected failure classes a mutation may declare. */
export type ErrorClass = (typeof ERROR_CLASSES)[number];

/** The errors-plugin options of a mutation returning `<Name>Result`, declaring the errors its service can return. */
export function resultOf(name: string, dataField: string, errors: readonly ErrorClass[]) {
  const names = errors.map((e) => e.name).join(', ');
  return {
    types: [...errors],
    union: { name: `${name}Result`, description: `${name}Payload, or the expected failure that left everything unchanged: ${names}.` },
    result: { name: `${name}Payload`, description: `${name} succeeded; \`${dataField}\` holds what it returned.` },
    dataField: { name: dataField, description: `The result of a successful ${lowerFirst(name)} (see the mutation's description).` },
  };
}

function lowerFirst(name: string): string {
  return name.charAt(0).toLowerCase() + name.slice(1);
}
