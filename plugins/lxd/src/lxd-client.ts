/**
 * A small client for the LXD REST API (1.0) over its unix socket: JSON requests, async operations
 * waited on through `/1.0/operations/<id>/wait`, and the exec API without websockets. Errors are
 * the SDK's: a socket that does not answer is `HostUnreachableError`, LXD's own refusals keep its
 * message in an `LxdApiError` (with the HTTP status) for the caller to classify.
 */
import { request } from 'node:http';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { HostUnreachableError, TransientError } from '@gatehouse/sdk';

/** LXD answered with an error (`error_code` and `error` of its response). */
export class LxdApiError extends Error {
  constructor(
    readonly method: string,
    readonly path: string,
    readonly status: number,
    readonly lxdMessage: string,
  ) {
    super(`LXD ${method} ${path} failed (${status}): ${lxdMessage}`);
    this.name = 'LxdApiError';
  }
}

/** An instance as `GET /1.0/instances?recursion=2` returns it (the fields used here). */
export interface LxdInstance {
  name: string;
  status: string;
  config: Record<string, string>;
  devices: Record<string, Record<string, string>>;
  expanded_config: Record<string, string>;
  expanded_devices: Record<string, Record<string, string>>;
  state: LxdInstanceState | null;
}

/** `GET /1.0/instances/<name>/state` (the fields used here). */
export interface LxdInstanceState {
  status: string;
  pid: number;
  network: Record<
    string,
    {
      addresses: { family: string; address: string; netmask: string; scope: string }[];
      hwaddr: string;
      host_name: string;
      counters: { bytes_received: number; bytes_sent: number; packets_received: number; packets_sent: number };
    }
  > | null;
}

interface Envelope {
  type: 'sync' | 'async' | 'error';
  status_code: number;
  error_code: number;
  error: string;
  operation: string;
  metadata: unknown;
}

interface Operation {
  id: string;
  status: string;
  status_code: number;
  err: string;
  metadata: Record<string, unknown> | null;
}

/** Connection errors meaning "nobody answers on the socket" rather than a bug of ours. */
const UNREACHABLE = new Set(['ENOENT', 'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT']);

/** The LXD REST API on one unix socket. */
export class LxdClient {
  constructor(
    readonly socketPath: string,
    private readonly timeoutMs = 60_000,
  ) {}

  /** A synchronous request; resolves to `metadata`. Async responses are waited for (the operation's metadata). */
  async call<T = unknown>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    const envelope = await this.send(method, path, body === undefined ? undefined : { json: body }, signal);
    if (envelope.type === 'async') return (await this.wait(envelope.operation, signal)).metadata as T;
    return envelope.metadata as T;
  }

  /** GET that answers undefined for a 404 (an instance or network that is not there). */
  async get<T>(path: string, signal?: AbortSignal): Promise<T | undefined> {
    try {
      return await this.call<T>('GET', path, undefined, signal);
    } catch (err) {
      if (err instanceof LxdApiError && err.status === 404) return undefined;
      throw err;
    }
  }

  /** Uploads a file as the request body (an image tarball) and waits for the operation. */
  async upload<T = unknown>(path: string, file: string): Promise<T> {
    const envelope = await this.send('POST', path, { file });
    if (envelope.type === 'async') return (await this.wait(envelope.operation)).metadata as T;
    return envelope.metadata as T;
  }

  /** Every instance with its configuration and state, in one request. */
  async instances(signal?: AbortSignal): Promise<LxdInstance[]> {
    return this.call<LxdInstance[]>('GET', '/1.0/instances?recursion=2', undefined, signal);
  }

  /**
   * Runs a command inside an instance (no websocket, no shell: an argument vector) and returns its
   * exit code; `record-output` keeps stdout/stderr in LXD's log files, read back on failure.
   */
  async exec(instance: string, command: readonly string[], signal?: AbortSignal): Promise<{ exitCode: number; stderr: string }> {
    const path = `/1.0/instances/${encodeURIComponent(instance)}/exec`;
    const op = await this.call<{ return?: number; output?: Record<string, string> }>(
      'POST',
      path,
      { command, environment: {}, 'wait-for-websocket': false, interactive: false, 'record-output': true },
      signal,
    );
    const exitCode = typeof op?.return === 'number' ? op.return : -1;
    let stderr = '';
    const log = op?.output?.['2'];
    if (exitCode !== 0 && log) stderr = await this.text(log).catch(() => '');
    // LXD keeps recorded output until the instance is deleted: remove ours
    for (const file of Object.values(op?.output ?? {})) await this.send('DELETE', file).catch(() => undefined);
    return { exitCode, stderr };
  }

  /** Waits for an async operation; throws LxdApiError when it failed. */
  private async wait(operation: string, signal?: AbortSignal): Promise<Operation> {
    const seconds = Math.ceil(this.timeoutMs / 1000);
    const envelope = await this.send('GET', `${operation}/wait?timeout=${seconds}`, undefined, signal);
    const op = envelope.metadata as Operation;
    if (op.status_code === 200) return op;
    if (op.status_code === 103 || op.status_code === 105) throw new TransientError(`LXD operation ${operation} still running after ${seconds} s`);
    throw new LxdApiError('operation', operation, 500, op.err || op.status);
  }

  /** A raw text resource (exec output logs). */
  private text(path: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const req = request({ socketPath: this.socketPath, path, method: 'GET', timeout: this.timeoutMs }, (res) => {
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (data += chunk));
        res.on('end', () => resolve(data));
      });
      req.on('error', reject);
      req.end();
    });
  }

  private async send(method: string, path: string, body?: { json: unknown } | { file: string }, signal?: AbortSignal): Promise<Envelope> {
    const headers: Record<string, string | number> = {};
    let payload: string | undefined;
    if (body && 'json' in body) {
      payload = JSON.stringify(body.json);
      headers['content-type'] = 'application/json';
      headers['content-length'] = Buffer.byteLength(payload);
    } else if (body) {
      headers['content-type'] = 'application/octet-stream';
      headers['content-length'] = (await stat(body.file)).size;
    }
    const text = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = request({ socketPath: this.socketPath, path, method, headers, timeout: this.timeoutMs, signal }, (res) => {
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (data += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: data }));
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer within ${this.timeoutMs} ms`), { code: 'ETIMEDOUT' })));
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code && UNREACHABLE.has(err.code)) {
          reject(new HostUnreachableError(`LXD is unreachable on ${this.socketPath} (${err.code}) during ${method} ${path}`, { cause: err }));
        } else reject(err);
      });
      if (payload !== undefined) req.end(payload);
      else if (body && 'file' in body) createReadStream(body.file).pipe(req);
      else req.end();
    });
    let envelope: Envelope;
    try {
      envelope = JSON.parse(text.text) as Envelope;
    } catch {
      throw new LxdApiError(method, path, text.status, `not a JSON answer: ${text.text.slice(0, 200)}`);
    }
    if (envelope.type === 'error' || text.status >= 400) throw new LxdApiError(method, path, envelope.error_code || text.status, envelope.error);
    return envelope;
  }
}
