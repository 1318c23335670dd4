/** Cursor pagination for the API's connections: pages of PAGE_SIZE with Previous / Next, never a cap on the list. */
import { useCallback, useState } from 'react';

/** Rows per page of every paginated list. */
export const PAGE_SIZE = 50;

/** What a connection says about the page it returned. */
export interface PageInfoLike {
  endCursor?: string | null;
  hasNextPage: boolean;
}

/** The cursors of the pages before the current one; `variables` go into the list's query. */
export interface CursorPages {
  variables: { first: number; after: string | null };
  /** 1-based number of the current page. */
  page: number;
  next(endCursor: string): void;
  previous(): void;
  /** Back to the first page (after a filter changed). */
  reset(): void;
}

/** Keeps a stack of `after` cursors: Next pushes the page's end cursor, Previous pops it. */
export function useCursorPages(pageSize: number = PAGE_SIZE): CursorPages {
  const [cursors, setCursors] = useState<string[]>([]);
  const next = useCallback((endCursor: string) => setCursors((c) => [...c, endCursor]), []);
  const previous = useCallback(() => setCursors((c) => c.slice(0, -1)), []);
  const reset = useCallback(() => setCursors([]), []);
  return { variables: { first: pageSize, after: cursors.at(-1) ?? null }, page: cursors.length + 1, next, previous, reset };
}

/** Previous / Next under a list; nothing when everything fits one page. */
export function Pager({ pages, pageInfo, label }: { pages: CursorPages; pageInfo: PageInfoLike | undefined; label: string }) {
  if (!pageInfo || (pages.page === 1 && !pageInfo.hasNextPage)) return null;
  return (
    <nav className="pager" aria-label={`${label} pages`}>
      <button type="button" className="secondary" onClick={pages.previous} disabled={pages.page === 1}>
        Previous
      </button>
      <span>Page {pages.page}</span>
      <button
        type="button"
        className="secondary"
        onClick={() => pageInfo.endCursor && pages.next(pageInfo.endCursor)}
        disabled={!pageInfo.hasNextPage || !pageInfo.endCursor}
      >
        Next
      </button>
    </nav>
  );
}
