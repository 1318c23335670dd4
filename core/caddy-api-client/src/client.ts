/**
 * CaddyAdminClient: Caddy's admin API as typed methods. Paths address the JSON config
 * (`/config/…`) or an object tagged with `@id` (`/id/<id>/…`); reads return the value with its
 * ETag, writes take `ifMatch`. Caddy applies every accepted write by reloading the whole config,
 * and rejects (keeping the running config) any write whose result does not load.
 */
import { checkObjectId, encodeConfigPath, type ConfigPath } from './config-path.js';
import type { CaddyConfig } from './config-types.js';
import { CaddyApiError, CaddyBadResponseError, CaddyPreconditionFailedError, CaddyUnexpectedConfigError } from './errors.js';
import { describeEndpoint, sendAdminRequest, type AdminResponse, type CaddyAdminEndpoint } from './transport.js';

/** Default per-request timeout. */
export const DEFAULT_TIMEOUT_MS = 10_000;

/** How to reach Caddy, and defaults for every call. */
export type CaddyAdminClientOptions = CaddyAdminEndpoint & {
  /** Per-request timeout in milliseconds (default 10 000); a call may override it. */
  timeoutMs?: number;
};

/** Options every call accepts. */
export interface CallOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Options of a write. */
export interface WriteOptions extends CallOptions {
  /**
   * An ETag from a read (`"<path> <hash>"`, as returned): Caddy applies the write only if the
   * config at that ETag's path still hashes the same, else CaddyPreconditionFailedError (412).
   * The ETag's path need not be the written path: guard a write to `routes/3` with the ETag of
   * `routes` to fail when anyone changed any route.
   */
  ifMatch?: string;
  /** Reload even when the resulting config is unchanged (`Cache-Control: must-revalidate`). */
  forceReload?: boolean;
}

/** Options of `load`. */
export interface LoadOptions extends WriteOptions {
  /**
   * When the new config has no `admin` key, copy the running one into it (default true). Caddy
   * 2.6.2 replaces its admin endpoint before it validates the rest, so a config without `admin`
   * moves the API to `localhost:2019` — even when the load then fails.
   */
  preserveAdmin?: boolean;
}

/** Options of `upsertById`. */
export interface UpsertOptions extends CallOptions {
  /** Attempts before a lost race (412 on every append) is thrown (default 5). */
  maxAttempts?: number;
  /**
   * Where a value not yet present goes: appended (default), or inserted before the first element
   * (`PUT <parent>/0`, guarded by that element's ETag), e.g. routes that must precede others.
   */
  position?: 'end' | 'start';
}

/** A value read from the config with its ETag. */
export interface ConfigRead<T> {
  value: T;
  /** `"<path> <hash>"`, quotes included, ready for `ifMatch`; undefined if Caddy sent none. */
  etag: string | undefined;
}

/** What `upsertById` did. */
export interface UpsertResult {
  action: 'replaced' | 'appended';
  /** How many attempts it took (more than 1 when a concurrent writer won a race). */
  attempts: number;
}

/** A typed client for Caddy's admin API over a unix socket or loopback TCP. */
export class CaddyAdminClient {
  /** The endpoint, printable: `unix//run/caddy/admin.sock` or `http://127.0.0.1:2019`. */
  readonly address: string;
  private readonly endpoint: CaddyAdminEndpoint;
  private readonly timeoutMs: number;

  constructor(options: CaddyAdminClientOptions) {
    const { timeoutMs, ...endpoint } = options;
    this.endpoint = endpoint;
    this.timeoutMs = timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.address = describeEndpoint(endpoint);
  }

  /**
   * Replaces the whole config (POST /load). Caddy keeps running the old config when the new one
   * fails to load. With `ifMatch`, uses POST /config/ instead, since /load ignores If-Match.
   */
  async load(config: CaddyConfig, options: LoadOptions = {}): Promise<void> {
    let document = config;
    if (options.preserveAdmin !== false && !('admin' in config)) {
      const admin = (await this.getConfig<CaddyConfig['admin'] | null>('admin', options)).value;
      if (admin != null) document = { admin, ...config };
    }
    if (options.ifMatch !== undefined) return this.write('POST', '/config/', document, options);
    await this.expectOk('POST', '/load', JSON.stringify(document), options);
  }

  /** Reads the config at `path` (default: all of it); a missing key under an existing object reads as `null`. */
  async getConfig<T = unknown>(path: ConfigPath = [], options: CallOptions = {}): Promise<ConfigRead<T>> {
    return this.read<T>(configUrl(path), options);
  }

  /** POST /config/path: appends to an array (or every element, with a last segment `...`); creates or replaces an object key. */
  async post(path: ConfigPath, value: unknown, options: WriteOptions = {}): Promise<void> {
    return this.write('POST', configUrl(path), value, options);
  }

  /** PUT /config/path: inserts into an array at the index (shifting the rest); creates an object key, failing if it exists. */
  async put(path: ConfigPath, value: unknown, options: WriteOptions = {}): Promise<void> {
    return this.write('PUT', configUrl(path), value, options);
  }

  /** PATCH /config/path: replaces an existing value (array element or object key), failing if it does not exist. */
  async patch(path: ConfigPath, value: unknown, options: WriteOptions = {}): Promise<void> {
    return this.write('PATCH', configUrl(path), value, options);
  }

  /** DELETE /config/path: removes the value; Caddy 2.6.2 answers 200 for an absent object key. */
  async delete(path: ConfigPath, options: WriteOptions = {}): Promise<void> {
    return this.write('DELETE', configUrl(path), undefined, options);
  }

  /** Reads the object tagged `@id: id`, or a path inside it; its ETag names the object's expanded /config path. */
  async getById<T = unknown>(id: string, subpath: ConfigPath = [], options: CallOptions = {}): Promise<ConfigRead<T>> {
    return this.read<T>(idUrl(id, subpath), options);
  }

  /** POST /id/id/subpath (append / create-or-replace, as `post`). */
  async postById(id: string, subpath: ConfigPath, value: unknown, options: WriteOptions = {}): Promise<void> {
    return this.write('POST', idUrl(id, subpath), value, options);
  }

  /** PUT /id/id/subpath (insert / create, as `put`). */
  async putById(id: string, subpath: ConfigPath, value: unknown, options: WriteOptions = {}): Promise<void> {
    return this.write('PUT', idUrl(id, subpath), value, options);
  }

  /** PATCH /id/id/subpath (replace existing, as `patch`); `subpath` `[]` replaces the whole object. */
  async patchById(id: string, subpath: ConfigPath, value: unknown, options: WriteOptions = {}): Promise<void> {
    return this.write('PATCH', idUrl(id, subpath), value, options);
  }

  /** DELETE /id/id/subpath; without a subpath removes the tagged object. Unknown id: CaddyApiError 404. */
  async deleteById(id: string, subpath: ConfigPath = [], options: WriteOptions = {}): Promise<void> {
    return this.write('DELETE', idUrl(id, subpath), undefined, options);
  }

  /**
   * Makes `parentPath` (an array, or absent) hold exactly one object tagged `@id: id`, equal to
   * `value`: replaces it in place if the id exists (PATCH /id/id), else appends it to the parent
   * (POST, guarded by the parent's ETag, retried on 412), creating the array if the parent is
   * absent. Idempotent; safe against concurrent upserts through Caddy. `value['@id']` is set to `id`.
   */
  async upsertById(parentPath: ConfigPath, id: string, value: object, options: UpsertOptions = {}): Promise<UpsertResult> {
    checkObjectId(id);
    const tagged = { ...value, '@id': id };
    const maxAttempts = options.maxAttempts ?? 5;
    let lastRace: CaddyPreconditionFailedError | undefined;
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      try {
        await this.patchById(id, [], tagged, options);
        return { action: 'replaced', attempts: attempt };
      } catch (error) {
        if (!isUnknownId(error)) throw error;
      }
      const parent = await this.getConfig<unknown>(parentPath, options);
      if (parent.value !== null && !Array.isArray(parent.value)) {
        throw new CaddyUnexpectedConfigError(configUrl(parentPath), `upsertById needs an array or nothing there, found ${typeof parent.value}`);
      }
      // Someone appended it between our PATCH and this read: go round and replace it.
      if (Array.isArray(parent.value) && parent.value.some((item) => isObject(item) && item['@id'] === id)) continue;
      try {
        if (parent.value === null) await this.post(parentPath, [tagged], { ...options, ifMatch: parent.etag });
        else if (options.position === 'start' && parent.value.length > 0) {
          // Caddy's If-Match names the path it guards: the first element's own ETag guards the insert
          const first = await this.getConfig<unknown>([...parentPath, 0], options);
          await this.put([...parentPath, 0], tagged, { ...options, ifMatch: first.etag });
        } else await this.post(parentPath, tagged, { ...options, ifMatch: parent.etag });
        return { action: 'appended', attempts: attempt };
      } catch (error) {
        if (!(error instanceof CaddyPreconditionFailedError)) throw error;
        lastRace = error;
      }
    }
    throw lastRace ?? new CaddyUnexpectedConfigError(configUrl(parentPath), `@id ${id} kept appearing and disappearing over ${maxAttempts} attempts`);
  }

  /** POST /stop: Caddy stops its apps and exits; later calls throw CaddyUnreachableError. */
  async stop(options: CallOptions = {}): Promise<void> {
    await this.expectOk('POST', '/stop', undefined, options);
  }

  private async read<T>(path: string, options: CallOptions): Promise<ConfigRead<T>> {
    const res = await this.expectOk('GET', path, undefined, options);
    let value: T;
    try {
      value = JSON.parse(res.body) as T;
    } catch (error) {
      throw new CaddyBadResponseError('GET', path, `body is not JSON (${(error as Error).message}): ${res.body.slice(0, 200)}`);
    }
    // Caddy 2.6 computes the hash while streaming the body and sends the ETag as a trailer.
    const etag = headerValue(res.headers.etag) ?? headerValue(res.trailers.etag);
    return { value, etag };
  }

  private async write(method: string, path: string, value: unknown, options: WriteOptions): Promise<void> {
    const headers: Record<string, string> = {};
    if (options.ifMatch !== undefined) headers['If-Match'] = options.ifMatch;
    if (options.forceReload) headers['Cache-Control'] = 'must-revalidate';
    await this.expectOk(method, path, value === undefined ? undefined : JSON.stringify(value), options, headers);
  }

  private async expectOk(
    method: string,
    path: string,
    body: string | undefined,
    options: CallOptions & { ifMatch?: string },
    headers?: Record<string, string>,
  ): Promise<AdminResponse> {
    const res = await sendAdminRequest(this.endpoint, { method, path, body, headers, timeoutMs: options.timeoutMs ?? this.timeoutMs, signal: options.signal });
    if (res.status >= 200 && res.status < 300) return res;
    const message = caddyErrorMessage(res);
    if (res.status === 412) throw new CaddyPreconditionFailedError(method, path, message, this.address, options.ifMatch ?? '');
    throw new CaddyApiError(res.status, method, path, message, this.address);
  }
}

/** Whether an error is Caddy's answer to an `@id` it does not know (404 on /id/…). */
export function isUnknownId(error: unknown): error is CaddyApiError {
  return error instanceof CaddyApiError && error.status === 404 && error.path.startsWith('/id/');
}

function configUrl(path: ConfigPath): string {
  return `/config/${encodeConfigPath(path)}`;
}

function idUrl(id: string, subpath: ConfigPath): string {
  const rest = encodeConfigPath(subpath);
  return `/id/${encodeURIComponent(checkObjectId(id))}${rest === '' ? '' : `/${rest}`}`;
}

function caddyErrorMessage(res: AdminResponse): string {
  try {
    const parsed: unknown = JSON.parse(res.body);
    if (isObject(parsed) && typeof parsed.error === 'string') return parsed.error;
  } catch {
    // not JSON: Go's plain-text errors ("404 page not found")
  }
  return res.body.trim() || `HTTP ${res.status}`;
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
