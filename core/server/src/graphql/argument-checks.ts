/**
 * Boundary checks every field gets without asking for them: each `ID` argument or input field, at
 * any depth of input objects and lists, must be a Gatehouse id (a UUID, or a built-in object's
 * `builtin:name`; upper case is accepted and lower-cased, so queries and mutations treat it alike), and no string argument may contain a NUL
 * character (PostgreSQL cannot store one). A refused value is a `ValidationError` naming its path
 * (`input.nics[1].network`, `id`): a typed result for mutations, a typed GraphQL error for queries
 * and subscriptions. A Pothos plugin, listed after the errors plugin so that its failures are the
 * errors plugin's to turn into results.
 */
import SchemaBuilder, { BasePlugin, type PothosOutputFieldConfig, type SchemaTypes } from '@pothos/core';
import {
  GraphQLID,
  GraphQLString,
  getNamedType,
  isInputObjectType,
  isListType,
  isNonNullType,
  type GraphQLArgument,
  type GraphQLFieldResolver,
  type GraphQLInputType,
  type GraphQLResolveInfo,
} from 'graphql';
import { ValidationError } from '../support/errors.js';
import { isId } from '../support/ids.js';

/** Ids of built-in objects (the firewall templates `builtin:web` …). */
const BUILT_IN = /^builtin:[a-z0-9-]{1,32}$/;

/** Checks and normalises one input value of a GraphQL input type; returns the value to use. */
function checkValue(type: GraphQLInputType, value: unknown, path: string): unknown {
  if (value === null || value === undefined) return value;
  if (isNonNullType(type)) return checkValue(type.ofType, value, path);
  if (isListType(type)) return (value as unknown[]).map((item, i) => checkValue(type.ofType as GraphQLInputType, item, `${path}[${i}]`));
  if (type === GraphQLID) {
    const text = String(value);
    const id = text.toLowerCase();
    if (!isId(id) && !BUILT_IN.test(id)) {
      throw new ValidationError(
        path,
        text,
        'is not a valid id (ids are UUIDs such as 0190f3a2-6b1c-7d4e-8f00-1a2b3c4d5e6f, or built-in names such as builtin:web)',
      );
    }
    return id;
  }
  if (type === GraphQLString) {
    const at = (value as string).indexOf('\u0000');
    if (at >= 0) throw new ValidationError(path, value, `contains a NUL character (at offset ${at})`);
    return value;
  }
  if (isInputObjectType(type)) {
    const fields = type.getFields();
    const out: Record<string, unknown> = {};
    for (const [name, v] of Object.entries(value as Record<string, unknown>)) {
      const field = fields[name];
      out[name] = field ? checkValue(field.type, v, `${path}.${name}`) : v;
    }
    return out;
  }
  return value;
}

/** Whether a type can hold an ID or a string somewhere (only those fields are wrapped). */
export function needsCheck(type: GraphQLInputType, seen = new Set<unknown>()): boolean {
  const named = getNamedType(type);
  if (named === GraphQLID || named === GraphQLString) return true;
  if (!isInputObjectType(named) || seen.has(named)) return false;
  seen.add(named);
  return Object.values(named.getFields()).some((f) => needsCheck(f.type, seen));
}

/** The checked arguments of one call. */
function checkedArgs(defs: readonly GraphQLArgument[], args: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...args };
  for (const def of defs) if (def.name in args) out[def.name] = checkValue(def.type, args[def.name], def.name);
  return out;
}

function wrap<R extends GraphQLFieldResolver<unknown, object, object> | undefined>(resolver: R): R {
  if (!resolver) return resolver;
  let defs: readonly GraphQLArgument[] | undefined;
  return ((parent: unknown, args: Record<string, unknown>, context: object, info: GraphQLResolveInfo) => {
    defs ??= info.parentType.getFields()[info.fieldName]!.args.filter((a) => needsCheck(a.type));
    return resolver(parent, defs.length ? checkedArgs(defs, args) : args, context, info);
  }) as R;
}

/** The Pothos plugin applying the checks to every field with arguments. */
export class ArgumentChecksPlugin<Types extends SchemaTypes> extends BasePlugin<Types> {
  override wrapResolve(resolver: GraphQLFieldResolver<unknown, Types['Context'], object>, fieldConfig: PothosOutputFieldConfig<Types>) {
    // a subscription's arguments are checked once, in `subscribe`; `resolve` runs for every event
    // (1,000 trafficUpdated subscribers of 50 ids each: 500,000 id checks a second otherwise)
    if (fieldConfig.kind === 'Subscription') return resolver;
    return Object.keys(fieldConfig.args).length ? wrap(resolver) : resolver;
  }

  override wrapSubscribe(subscribe: GraphQLFieldResolver<unknown, Types['Context'], object> | undefined, fieldConfig: PothosOutputFieldConfig<Types>) {
    return Object.keys(fieldConfig.args).length ? wrap(subscribe) : subscribe;
  }
}

declare global {
  export namespace PothosSchemaTypes {
    export interface Plugins<Types extends SchemaTypes> {
      argumentChecks: ArgumentChecksPlugin<Types>;
    }
  }
}

/** The plugin's name, for the builder's `plugins` list. */
export const ArgumentChecks = 'argumentChecks';
SchemaBuilder.registerPlugin(ArgumentChecks, ArgumentChecksPlugin);
