/** Small conversions between form text and API values, shared by the pages. */

/** "a, b,,c" → ["a", "b", "c"]. */
export function splitList(text: string): string[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

/** A port range as people write it: "80" or "8000-8010". */
export function rangeText(r: { start: number; end: number }): string {
  return r.start === r.end ? String(r.start) : `${r.start}-${r.end}`;
}

/** A forward's connection rate limits and what they refused, for a table cell: "50/s per source, 200/s in all · 1,796 refused", or "none". */
export function rateLimitText(
  limit: { perSource: number | null; total: number | null; burst: number; action: string } | null,
  limited: { connections: number } | null,
): string {
  const parts: string[] = [];
  if (limit?.perSource != null) parts.push(`${limit.perSource}/s per source`);
  if (limit?.total != null) parts.push(`${limit.total}/s in all`);
  let text = parts.length > 0 ? `${parts.join(', ')} (burst ${limit!.burst}, ${limit!.action.toLowerCase()})` : 'none';
  // refused connections are kept when the limit is removed: still worth showing
  if (limited && limited.connections > 0) text += ` · ${limited.connections.toLocaleString('en')} refused`;
  return text;
}
