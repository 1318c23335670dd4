/**
 * Config paths: which part of Caddy's JSON a request addresses. Caddy splits the decoded URL path
 * on `/` and walks the config with each segment (object keys, array indexes), so a key that
 * contains `/` cannot be addressed at all, and `.`/`..`/empty segments would be rewritten by Go's
 * router before Caddy sees them: those are refused here instead of addressing something else.
 */
import { CaddyInvalidPathError } from './errors.js';

/** One step into the config: an object key or an array index. */
export type ConfigPathSegment = string | number;

/**
 * A config path, as segments (`['apps', 'http', 'servers', 'srv0', 'routes', 0]`) or as a
 * `/`-separated string of raw (not URL-encoded) segments (`'apps/http/servers/srv0/routes/0'`).
 * The empty path (`[]`, `''`, `'/'`) is the root. A last segment `...` after an array, with POST,
 * appends every element of an array value (Caddy's "spread" form).
 */
export type ConfigPath = string | readonly ConfigPathSegment[];

/** Splits and checks a config path into its raw segments. */
export function configPathSegments(path: ConfigPath): string[] {
  const raw: ConfigPathSegment[] = typeof path === 'string' ? splitStringPath(path) : [...path];
  return raw.map((segment, index) => checkSegment(path, segment, index === raw.length - 1));
}

/** The URL form of a config path: each segment percent-encoded, joined with `/`, no leading slash. */
export function encodeConfigPath(path: ConfigPath): string {
  return configPathSegments(path).map(encodeURIComponent).join('/');
}

/** Checks an `@id` for use in `/id/<id>`: non-empty, no `/`, not `.` or `..`. */
export function checkObjectId(id: string): string {
  if (typeof id !== 'string' || id === '') throw new CaddyInvalidPathError(id, 'an @id must be a non-empty string');
  if (id.includes('/')) throw new CaddyInvalidPathError(id, "an @id containing '/' cannot be addressed through /id/");
  if (id === '.' || id === '..') throw new CaddyInvalidPathError(id, `'${id}' cannot be addressed through /id/`);
  return id;
}

function splitStringPath(path: string): string[] {
  const trimmed = path.replace(/^\/+/, '').replace(/\/+$/, '');
  return trimmed === '' ? [] : trimmed.split('/');
}

function checkSegment(path: ConfigPath, segment: ConfigPathSegment, last: boolean): string {
  if (typeof segment === 'number') {
    if (!Number.isSafeInteger(segment) || segment < 0) throw new CaddyInvalidPathError(path, `array index ${segment} is not a non-negative integer`);
    return String(segment);
  }
  if (typeof segment !== 'string') throw new CaddyInvalidPathError(path, `segment ${String(segment)} is neither a string nor a number`);
  if (segment === '') throw new CaddyInvalidPathError(path, 'empty segment');
  if (segment.includes('/')) throw new CaddyInvalidPathError(path, `segment '${segment}' contains '/', which Caddy would split`);
  if (segment === '.' || segment === '..') throw new CaddyInvalidPathError(path, `segment '${segment}' would be resolved by the HTTP router`);
  if (segment === '...' && !last) throw new CaddyInvalidPathError(path, "'...' may only be the last segment");
  return segment;
}
