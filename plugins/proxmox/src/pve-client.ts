/**
 * A typed client of the Proxmox VE REST API (`/api2/json`) with an API token
 * (`Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET`). TLS is always verified: against a
 * pinned SHA-256 fingerprint of the node's (self-signed) certificate, a CA file, or the system's
 * CAs. With a pinned fingerprint the connection is checked before the request is written, so the
 * token never reaches a server with another certificate. Asynchronous calls return a UPID;
 * `waitTask` polls its status until it stopped and checks its exit status.
 */
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { isIP, type Socket } from 'node:net';
import { connect, type PeerCertificate, type TLSSocket } from 'node:tls';
import type { ProxmoxDriverConfig } from './config.js';

/** A parameter value as PVE takes it (booleans are sent as 0/1). */
export type PveParams = Record<string, string | number | boolean | undefined>;

/** PVE answered with an error status. */
export class PveApiError extends Error {
  constructor(
    readonly method: string,
    readonly path: string,
    readonly status: number,
    /** PVE's reason (the HTTP status message, or the body's `message`). */
    readonly reason: string,
    /** Per-parameter errors of a 400. */
    readonly errors: Record<string, string> | undefined,
  ) {
    const details = errors
      ? `: ${Object.entries(errors)
          .map(([k, v]) => `${k}: ${v.trim()}`)
          .join('; ')}`
      : '';
    super(`${method} ${path}: ${status} ${reason}${details}`);
    this.name = 'PveApiError';
  }
}

/** A PVE task that stopped with an exit status other than OK (or WARNINGS). */
export class PveTaskError extends Error {
  constructor(
    readonly upid: string,
    readonly exitstatus: string,
  ) {
    super(`PVE task ${upid} failed: ${exitstatus}`);
    this.name = 'PveTaskError';
  }
}

/** No answer from PVE: it cannot be reached, the connection broke, or its certificate is not the one trusted. */
export class PveConnectionError extends Error {
  constructor(
    readonly kind: 'unreachable' | 'reset' | 'tls' | 'timeout',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'PveConnectionError';
  }
}

/** What a task's status says. */
export interface PveTaskStatus {
  status: 'running' | 'stopped';
  exitstatus?: string;
  upid: string;
  node: string;
}

const UNREACHABLE = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EADDRNOTAVAIL']);

/** The node a UPID (`UPID:node:pid:pstart:starttime:type:id:user:`) belongs to. */
export function upidNode(upid: string): string {
  const node = upid.split(':')[1];
  if (!upid.startsWith('UPID:') || !node) throw new Error(`not a PVE task id: ${JSON.stringify(upid)}`);
  return node;
}

/** Encodes params as PVE reads them (form or query), leaving out undefined ones. */
function encode(params: PveParams): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined) continue;
    search.set(key, typeof value === 'boolean' ? (value ? '1' : '0') : String(value));
  }
  return search.toString();
}

/** The client. One TLS connection per request (no pool to go stale while PVE restarts). */
export class PveClient {
  private readonly ca: Buffer | undefined;
  private readonly origin: URL;

  constructor(readonly config: Pick<ProxmoxDriverConfig, 'url' | 'tokenId' | 'secret' | 'fingerprint' | 'caFile' | 'timeoutMs' | 'taskTimeoutMs'>) {
    this.origin = new URL(config.url);
    this.ca = config.caFile ? readFileSync(config.caFile) : undefined;
  }

  /** GET with query parameters. */
  get<T>(path: string, params: PveParams = {}, signal?: AbortSignal): Promise<T> {
    return this.call<T>('GET', path, params, signal);
  }

  /** One API call; returns the response's `data`. Throws PveApiError, PveConnectionError. */
  call<T>(method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, params: PveParams = {}, signal?: AbortSignal): Promise<T> {
    const encoded = encode(params);
    const inBody = method === 'POST' || method === 'PUT';
    const fullPath = `/api2/json${path}${!inBody && encoded ? `?${encoded}` : ''}`;
    const body = inBody ? encoded : '';
    return new Promise<T>((resolve, reject) => {
      const req = request(
        {
          method,
          host: this.origin.hostname.replace(/^\[|\]$/g, ''),
          port: this.origin.port || 443,
          path: fullPath,
          signal,
          headers: {
            authorization: `PVEAPIToken=${this.config.tokenId}=${this.config.secret}`,
            accept: 'application/json',
            ...(inBody ? { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body) } : {}),
          },
          createConnection: (_options, done: (err: Error | null, socket: Socket) => void) => {
            this.connectVerified().then(
              (socket) => done(null, socket),
              (err: Error) => done(err, undefined as unknown as Socket),
            );
            return undefined as unknown as Socket;
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', (err) => reject(connectionError(err)));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: { data?: unknown; errors?: Record<string, string>; message?: string } = {};
            try {
              parsed = text ? (JSON.parse(text) as typeof parsed) : {};
            } catch {
              // PVE's proxy answers some errors with plain text
            }
            const status = res.statusCode ?? 0;
            if (status >= 200 && status < 300) resolve(parsed.data as T);
            else reject(new PveApiError(method, path, status, (parsed.message ?? res.statusMessage ?? '').trim(), parsed.errors ?? undefined));
          });
        },
      );
      req.setTimeout(this.config.timeoutMs, () => req.destroy(new PveConnectionError('timeout', `no answer within ${this.config.timeoutMs} ms`)));
      req.on('error', (err) => reject(connectionError(err)));
      req.end(body);
    });
  }

  /**
   * Waits for an asynchronous call's task: polls its status until it stopped, then checks the
   * exit status (`OK`, or `WARNINGS: n`). Throws PveTaskError on any other, PveConnectionError
   * ('timeout') when it runs longer than `taskTimeoutMs`.
   */
  async waitTask(upid: string, signal?: AbortSignal): Promise<void> {
    const node = upidNode(upid);
    const until = Date.now() + this.config.taskTimeoutMs;
    for (let delay = 100; ; delay = Math.min(delay * 2, 1_000)) {
      const status = await this.get<PveTaskStatus>(`/nodes/${encodeURIComponent(node)}/tasks/${encodeURIComponent(upid)}/status`, {}, signal);
      if (status.status === 'stopped') {
        const exit = status.exitstatus ?? 'unknown';
        if (exit === 'OK' || exit.startsWith('WARNINGS')) return;
        throw new PveTaskError(upid, exit);
      }
      if (Date.now() > until) throw new PveConnectionError('timeout', `PVE task ${upid} still running after ${this.config.taskTimeoutMs} ms`);
      await new Promise((r) => setTimeout(r, delay));
      signal?.throwIfAborted();
    }
  }

  /** A TLS connection whose certificate has been verified (fingerprint or chain); nothing is written before. */
  private connectVerified(): Promise<TLSSocket> {
    const host = this.origin.hostname.replace(/^\[|\]$/g, '');
    const pinned = this.config.fingerprint;
    return new Promise((resolve, reject) => {
      const socket = connect({
        host,
        port: Number(this.origin.port || 443),
        ...(isIP(host) ? {} : { servername: host }),
        // a pinned certificate is checked below, against its fingerprint, instead of a chain
        rejectUnauthorized: !pinned,
        ...(this.ca ? { ca: this.ca } : {}),
      });
      socket.setTimeout(this.config.timeoutMs, () => socket.destroy(new PveConnectionError('timeout', `no TLS handshake within ${this.config.timeoutMs} ms`)));
      socket.once('error', reject);
      socket.once('secureConnect', () => {
        socket.setTimeout(0);
        socket.removeListener('error', reject);
        if (pinned) {
          const cert: PeerCertificate = socket.getPeerCertificate();
          if (cert.fingerprint256?.toUpperCase() !== pinned) {
            socket.destroy();
            reject(
              new PveConnectionError(
                'tls',
                `the certificate of ${this.origin.host} has SHA-256 fingerprint ${cert.fingerprint256 ?? '(none)'}, not the pinned ${pinned}`,
              ),
            );
            return;
          }
        }
        resolve(socket);
      });
    });
  }
}

/** A socket or TLS error as a PveConnectionError of the right kind. */
function connectionError(err: unknown): Error {
  if (err instanceof PveConnectionError) return err;
  const e = err as NodeJS.ErrnoException;
  if (e?.name === 'AbortError') return e;
  const code = e?.code ?? '';
  if (UNREACHABLE.has(code)) return new PveConnectionError('unreachable', `${code}: ${e.message}`, { cause: err });
  if (code === 'ETIMEDOUT') return new PveConnectionError('timeout', e.message, { cause: err });
  if (/CERT|SELF_SIGNED|ERR_TLS|UNABLE_TO_(GET|VERIFY)/.test(code)) return new PveConnectionError('tls', `${code}: ${e.message}`, { cause: err });
  return new PveConnectionError('reset', `${code || 'connection closed'}: ${e?.message ?? String(err)}`, { cause: err });
}
