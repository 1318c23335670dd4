/**
 * Connections that also count: `totalCount` runs one count query with the list's filter, and only
 * when a client asks for it (the Overview's counts), so a page costs no more without it.
 */
import type { FieldRef } from '@pothos/core';
import type { BuilderTypes } from './builder.js';
import { connectionOf, pageTypes } from './pagination.js';

/** A page whose connection can also count every object its list matches (`totalCount`: one count query, run only when asked for). */
export function countedConnectionOf<T extends { id: string }>(rows: T[], page: { size: number }, totalCount: () => Promise<number>) {
  return { ...connectionOf(rows, page), totalCount };
}

/** `pageTypes` with the connection's `totalCount` field, for lists built by `countedConnectionOf`. */
export function countedPageTypes(things: string) {
  const [connection, edge] = pageTypes(things);
  return [
    {
      ...connection,
      fields: <Parent extends object>(t: PothosSchemaTypes.ObjectFieldBuilder<BuilderTypes, Parent>): { totalCount: FieldRef<BuilderTypes, number> } => ({
        totalCount: t.int({
          description: `How many ${things} the list holds over all its pages, with the same filter (a count, not a page size).`,
          resolve: (page) => {
            // the relay plugin types the connection without what the resolver added to it
            if (!('totalCount' in page) || typeof page.totalCount !== 'function')
              throw new Error(`the ${things} connection was not built by countedConnectionOf`);
            return (page.totalCount as () => Promise<number>)();
          },
        }),
      }),
    },
    edge,
  ] as const;
}
