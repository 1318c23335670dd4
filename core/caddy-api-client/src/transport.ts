/**
 * One HTTP exchange with Caddy's admin endpoint over node:http, on a unix socket or loopback TCP.
 * Every request opens its own connection: Caddy replaces its admin server when a loaded config
 * changes `admin`, and a pooled connection to the old one would fail the next call.
 */
import { Agent, request as httpRequest, type IncomingHttpHeaders, type RequestOptions } from 'node:http';
import { CaddyUnreachableError, CaddyTimeoutError } from './errors.js';

/** Where Caddy's admin API listens. */
export type CaddyAdminEndpoint = CaddyUnixEndpoint | CaddyTcpEndpoint;

/** Admin API on a unix socket (`admin.listen: "unix//run/caddy/admin.sock"`): the recommended setup, since the API has no auth. */
export interface CaddyUnixEndpoint {
  socketPath: string;
  /**
   * Host header to send. Default `''`: Caddy 2.6 allows only an empty Host on a unix-socket admin
   * unless `admin.origins` lists others.
   */
  host?: string;
  /** Origin header to send; none by default (only needed with `enforce_origin`). */
  origin?: string;
}

/** Admin API on loopback TCP (`admin.listen: "127.0.0.1:2019"`). */
export interface CaddyTcpEndpoint {
  /** `http://127.0.0.1:2019`; Host is taken from it. */
  url: string;
  /** Origin header to send. Default: the URL's origin (`http://127.0.0.1:2019`), which Caddy's `enforce_origin` accepts when it is in `admin.origins`. */
  origin?: string;
}

/** A raw admin API response. */
export interface AdminResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** Trailers: Caddy 2.6 sends a GET's ETag as a trailer, after the body. */
  trailers: NodeJS.Dict<string>;
  body: string;
}

/** A request to the admin API. */
export interface AdminRequest {
  method: string;
  /** Already encoded path, with leading slash: `/config/apps/http`, `/id/r1`, `/load`. */
  path: string;
  /** JSON text to send (sets Content-Type: application/json). */
  body?: string;
  headers?: Record<string, string>;
  timeoutMs: number;
  signal?: AbortSignal;
}

/** Printable form of an endpoint, for error messages (`unix//run/caddy/admin.sock`, `http://127.0.0.1:2019`). */
export function describeEndpoint(endpoint: CaddyAdminEndpoint): string {
  return 'socketPath' in endpoint ? `unix/${endpoint.socketPath}` : new URL(endpoint.url).origin;
}

/** Sends one request and collects the whole response; connection failures and timeouts become CaddyUnreachableError. */
export function sendAdminRequest(endpoint: CaddyAdminEndpoint, req: AdminRequest): Promise<AdminResponse> {
  const address = describeEndpoint(endpoint);
  const headers: Record<string, string> = { Accept: 'application/json', ...req.headers };
  const options: RequestOptions = { method: req.method, path: req.path, agent: new Agent({ keepAlive: false }), setHost: false, headers };
  if ('socketPath' in endpoint) {
    options.socketPath = endpoint.socketPath;
    headers.Host = endpoint.host ?? '';
    if (endpoint.origin !== undefined) headers.Origin = endpoint.origin;
  } else {
    const url = new URL(endpoint.url);
    if (url.protocol !== 'http:') throw new TypeError(`Caddy admin URL must be http:// (got ${endpoint.url})`);
    options.hostname = url.hostname.replace(/^\[(.*)\]$/, '$1');
    options.port = url.port === '' ? 80 : Number(url.port);
    headers.Host = url.host;
    headers.Origin = endpoint.origin ?? url.origin;
  }
  if (req.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    headers['Content-Length'] = String(Buffer.byteLength(req.body));
  }

  return new Promise<AdminResponse>((resolve, reject) => {
    let settled = false;
    const finish = (error: Error | undefined, response?: AdminResponse) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.signal?.removeEventListener('abort', onAbort);
      if (error) {
        outgoing.destroy();
        reject(error);
      } else resolve(response!);
    };
    const onAbort = () => finish(req.signal!.reason instanceof Error ? req.signal!.reason : new Error('aborted'));
    const timer = setTimeout(() => finish(new CaddyTimeoutError(address, req.method, req.path, req.timeoutMs)), req.timeoutMs);

    const outgoing = httpRequest(options, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', (error) => finish(new CaddyUnreachableError(address, req.method, req.path, `response interrupted: ${error.message}`, { cause: error })));
      res.on('end', () =>
        finish(undefined, { status: res.statusCode ?? 0, headers: res.headers, trailers: res.trailers, body: Buffer.concat(chunks).toString('utf8') }),
      );
    });
    outgoing.on('error', (error: NodeJS.ErrnoException) => finish(new CaddyUnreachableError(address, req.method, req.path, error.message, { cause: error })));
    if (req.signal?.aborted) return onAbort();
    req.signal?.addEventListener('abort', onAbort, { once: true });
    outgoing.end(req.body);
  });
}
