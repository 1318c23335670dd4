/** The before/after of an audit entry as a line diff of its fields (dotted paths), for reading what a change did. */

/** One field that differs, was added or removed. */
export interface DiffLine {
  path: string;
  before?: string;
  after?: string;
}

/** `{a: {b: 1}, c: [2]}` → `a.b = 1`, `c.0 = 2`: every leaf by its path. */
export function flatten(value: unknown, prefix = '', into: Map<string, string> = new Map()): Map<string, string> {
  if (value !== null && typeof value === 'object' && (Array.isArray(value) ? value.length > 0 : Object.keys(value).length > 0)) {
    for (const [key, child] of Object.entries(value)) flatten(child, prefix ? `${prefix}.${key}` : key, into);
  } else if (prefix || value !== undefined) {
    into.set(prefix, JSON.stringify(value ?? null));
  }
  return into;
}

/** The fields whose value changed between `before` and `after` (null or absent: a creation or a deletion), sorted by path. */
export function diffJson(before: unknown, after: unknown): DiffLine[] {
  const a = before === null || before === undefined ? new Map<string, string>() : flatten(before);
  const b = after === null || after === undefined ? new Map<string, string>() : flatten(after);
  const lines: DiffLine[] = [];
  for (const path of new Set([...a.keys(), ...b.keys()])) {
    const was = a.get(path);
    const is = b.get(path);
    if (was !== is) lines.push({ path, ...(was !== undefined ? { before: was } : {}), ...(is !== undefined ? { after: is } : {}) });
  }
  return lines.sort((x, y) => (x.path < y.path ? -1 : x.path > y.path ? 1 : 0));
}
