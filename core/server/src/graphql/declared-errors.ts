/**
 * An expected failure a mutation does not declare in its result union (by its exact class) is a
 * defect of the declaration, not a result: it is rethrown as an unexpected error (logged and masked as
 * INTERNAL_SERVER_ERROR), never turned into another member of the union nor passed on with its
 * code. A Pothos plugin, listed after the errors plugin so that it sees what the resolver (and the
 * argument checks inside it) threw before the errors plugin does.
 */
import SchemaBuilder, { BasePlugin, type PothosOutputFieldConfig, type SchemaTypes } from '@pothos/core';
import type { GraphQLFieldResolver } from 'graphql';
import { GatehouseError } from '../support/errors.js';

/** Thrown in place of an expected failure its mutation does not declare. */
export class UndeclaredError extends Error {
  constructor(
    readonly fieldName: string,
    readonly undeclared: GatehouseError,
  ) {
    super(`${fieldName} threw ${undeclared.name} (${undeclared.code}), which its result union does not declare: ${undeclared.message}`, {
      cause: undeclared,
    });
    this.name = 'UndeclaredError';
  }
}

/** The Pothos plugin guarding every field that declares `errors`. */
export class DeclaredErrorsPlugin<Types extends SchemaTypes> extends BasePlugin<Types> {
  override wrapResolve(resolver: GraphQLFieldResolver<unknown, Types['Context'], object>, fieldConfig: PothosOutputFieldConfig<Types>) {
    const declared = fieldConfig.extensions?.pothosErrors as (abstract new (...args: never[]) => unknown)[] | undefined;
    if (!declared) return resolver;
    return async (parent: unknown, args: object, context: Types['Context'], info: Parameters<typeof resolver>[3]) => {
      try {
        return await resolver(parent, args, context, info);
      } catch (error) {
        // the exact class: a subclass of a declared error would otherwise pass as its parent's member
        if (error instanceof GatehouseError && !declared.includes(error.constructor as (typeof declared)[number]))
          throw new UndeclaredError(fieldConfig.name, error);
        throw error;
      }
    };
  }
}

declare global {
  export namespace PothosSchemaTypes {
    export interface Plugins<Types extends SchemaTypes> {
      declaredErrors: DeclaredErrorsPlugin<Types>;
    }
  }
}

/** The plugin's name, for the builder's `plugins` list. */
export const DeclaredErrors = 'declaredErrors';
SchemaBuilder.registerPlugin(DeclaredErrors, DeclaredErrorsPlugin);
