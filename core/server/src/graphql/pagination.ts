/**
 * Relay connections with forward keyset pagination on time-ordered ids: `first` and `after`.
 */
import { GraphQLError } from 'graphql';
import { isId } from '../support/ids.js';

/** Largest page a client may ask for. */
export const MAX_PAGE = 500;
/** Page size when `first` is not given. */
export const DEFAULT_PAGE = 50;

interface ConnectionArgs {
  first?: number | null;
  after?: string | null;
  last?: number | null;
  before?: string | null;
}

/** Turns connection args into a keyset page request (one extra row tells whether more follow). */
export function pageOf(args: ConnectionArgs): { after?: string; limit: number; size: number } {
  if (args.last != null || args.before != null) {
    throw new GraphQLError('Only forward pagination is supported: use first/after', { extensions: { code: 'VALIDATION_FAILED', field: 'last' } });
  }
  const size = args.first ?? DEFAULT_PAGE;
  if (!Number.isInteger(size) || size < 0 || size > MAX_PAGE) {
    throw new GraphQLError(`first ${size} must be an integer from 0 to ${MAX_PAGE}`, { extensions: { code: 'VALIDATION_FAILED', field: 'first' } });
  }
  if (args.after != null && !isId(args.after)) {
    throw new GraphQLError(`after ${JSON.stringify(args.after)} is not a cursor returned by this connection`, {
      extensions: { code: 'VALIDATION_FAILED', field: 'after' },
    });
  }
  return { after: args.after ?? undefined, limit: size + 1, size };
}

/** Builds the connection object from a page fetched with `limit = size + 1`. */
export function connectionOf<T extends { id: string }>(rows: T[], page: { size: number }) {
  const nodes = rows.slice(0, page.size);
  return {
    edges: nodes.map((node) => ({ cursor: node.id, node })),
    pageInfo: {
      hasNextPage: rows.length > page.size,
      hasPreviousPage: false,
      startCursor: nodes[0]?.id ?? null,
      endCursor: nodes.at(-1)?.id ?? null,
    },
  };
}

/** Complexity of a connection field: its page size times the cost of a node. */
export function connectionComplexity(args: ConnectionArgs): { field: number; multiplier: number } {
  return { field: 1, multiplier: Math.max(1, args.first ?? DEFAULT_PAGE) };
}

/** Descriptions of the types a connection generates (`…Connection`, `…ConnectionEdge`): `t.connection(options, ...pageTypes('hosts'))`. */
export function pageTypes(things: string): [{ description: string }, { description: string }] {
  return [
    { description: `A page of ${things}: \`edges\` holds them, \`pageInfo\` says whether more follow.` },
    { description: `One of the ${things} on a page, with its cursor.` },
  ];
}
