/**
 * One execution per event and document for subscriptions whose events are shared: when the
 * source stream hands the same event object to many subscribers (`trafficUpdated` gives one
 * update object to every subscriber of a group with the same view, see
 * traffic/traffic-watchers.ts), the event's result for a given document, operation and variables
 * is the same for all of them, so it is executed once and the result object handed to each.
 *
 * Only for root fields listed here, whose whole selection resolves from the event alone (no
 * resolver below them reads the context, the actor or loaders): what a subscriber may see is
 * decided when the event is built, never during execution. Other subscriptions run as before.
 */
import { createSourceEventStream, execute, getOperationAST, Kind, type DocumentNode, type ExecutionArgs, type ExecutionResult } from 'graphql';
import type { Plugin } from 'graphql-yoga';

/** Subscription fields whose results are shared between subscribers given the same event object. */
export const SHARED_RESULT_SUBSCRIPTIONS: readonly string[] = ['trafficUpdated'];

/** The root field of a single-field subscription selected plainly (no alias, fragment or directive); undefined otherwise. */
function plainRootField(document: DocumentNode, operationName: string | null | undefined): string | undefined {
  const operation = getOperationAST(document, operationName);
  if (operation?.operation !== 'subscription' || operation.selectionSet.selections.length !== 1) return undefined;
  const field = operation.selectionSet.selections[0]!;
  if (field.kind !== Kind.FIELD || (field.directives?.length ?? 0) > 0) return undefined;
  return field.name.value;
}

/** Maps an async iterator's values, forwarding `return` (the subscriber left) to the source. */
function mapEvents<T, U>(source: AsyncIterator<T>, map: (value: T) => U | Promise<U>): AsyncIterableIterator<U> {
  return {
    async next() {
      const next = await source.next();
      return next.done ? { value: undefined, done: true } : { value: await map(next.value), done: false };
    },
    async return() {
      await source.return?.();
      return { value: undefined, done: true };
    },
    async throw(error: unknown) {
      await source.return?.();
      throw error;
    },
    [Symbol.asyncIterator]() {
      return this;
    },
  };
}

/** The envelop plugin; see the file comment. */
export function sharedSubscriptionResults(fields: readonly string[] = SHARED_RESULT_SUBSCRIPTIONS): Plugin {
  const shared = new Set(fields);
  // event object → (document text, operation, variables) → its result; an entry goes with its event
  const results = new WeakMap<object, Map<string, ExecutionResult | Promise<ExecutionResult>>>();
  const subscribe = async (args: ExecutionArgs) => {
    const stream = await createSourceEventStream(args);
    if (!(Symbol.asyncIterator in stream)) return stream;
    // the text, not the parsed object: documents parsed apart from the same text share too
    const key = `${args.document.loc?.source.body ?? JSON.stringify(args.document)}\n${args.operationName ?? ''}\n${JSON.stringify(args.variableValues ?? {})}`;
    return mapEvents(stream[Symbol.asyncIterator](), (event: unknown) => {
      if (typeof event !== 'object' || event === null) return execute({ ...args, rootValue: event });
      let byKey = results.get(event);
      if (!byKey) results.set(event, (byKey = new Map()));
      let result = byKey.get(key);
      if (!result) byKey.set(key, (result = execute({ ...args, rootValue: event })));
      return result;
    });
  };
  return {
    onSubscribe: ({ args, setSubscribeFn }) => {
      const field = plainRootField(args.document, args.operationName);
      if (field !== undefined && shared.has(field)) setSubscribeFn(subscribe as never);
    },
  };
}
