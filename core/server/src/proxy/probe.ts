/**
 * Why Caddy answers 502 for a proxy: the controller probes the target from the machine Caddy runs
 * on, the way Caddy reaches it (TCP, then TLS or a plain HTTP request), and names the cause in one
 * sentence — nothing listens, packets are dropped, no route, the target speaks the other protocol
 * than the proxy is set to, or it answers something that is neither HTTP nor TLS.
 *
 * It diagnoses connectivity, not the application: any HTTP reply, even a 500, is `ok`. A failed TLS
 * handshake alone does not prove the target speaks plain HTTP (anything that is not TLS fails it
 * with "wrong version number"), so the probe confirms with a real HTTP request on a new connection,
 * and likewise confirms TLS with a real handshake before saying a port set to HTTP speaks TLS.
 */
import { connect as netConnect, isIP, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

export type TargetState = 'ok' | 'connection_refused' | 'timeout' | 'unreachable' | 'tls_mismatch' | 'bad_response';

export interface ProbeTarget {
  /** IPv4, IPv6 (without brackets) or a host name. */
  address: string;
  port: number;
  protocol: 'http' | 'https';
}

export interface ProbeOptions {
  /** Budget for the whole probe, every connection it makes included; default 3000. */
  timeoutMs?: number;
}

export interface ProbeResult {
  state: TargetState;
  /** One human sentence naming address:port and what happened, e.g. "10.0.0.5:8080 refused the connection (nothing listens on the port)". */
  detail: string;
  /** Milliseconds the probe took. */
  elapsedMs: number;
}

export const DEFAULT_PROBE_TIMEOUT_MS = 3000;

/** What Go's net/http writes when a plain HTTP request reaches its TLS listener: the target speaks TLS. */
const GO_HTTPS_HINT = 'HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.';
/** Bytes of a reply kept for classifying it; an HTTP status line and Go's hint fit easily. */
const REPLY_LIMIT = 512;

type ConnectOutcome = { kind: 'connected'; socket: Socket } | { kind: 'timeout' } | { kind: 'error'; code: string; message: string };
type HandshakeOutcome = { kind: 'ok'; version: string } | { kind: 'timeout' } | { kind: 'error'; code: string; reason: string; alert: boolean };
type ReplyOutcome =
  | { kind: 'http'; statusLine: string }
  | { kind: 'https_hint' }
  | { kind: 'tls' }
  | { kind: 'other'; bytes: Buffer }
  | { kind: 'closed'; code: string | undefined }
  | { kind: 'timeout' };

/**
 * Probes one proxy target. Never rejects for network trouble (that is the result); throws only for
 * a port outside 1-65535 or an empty address. Every socket is destroyed and every timer cleared
 * before it resolves, so it never keeps the event loop alive.
 */
export async function probeTarget(target: ProbeTarget, options: ProbeOptions = {}): Promise<ProbeResult> {
  if (!Number.isInteger(target.port) || target.port < 1 || target.port > 65535) throw new RangeError(`port ${target.port} is not in 1-65535`);
  if (target.address === '') throw new RangeError('address is empty');
  const timeoutMs = options.timeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS;
  const started = performance.now();
  // one deadline for the whole probe, so callers get an answer in about timeoutMs whatever happens
  const remaining = () => Math.max(0, started + timeoutMs - performance.now());
  const where = endpoint(target);
  const result = (state: TargetState, detail: string): ProbeResult => ({ state, detail, elapsedMs: Math.round(performance.now() - started) });

  const connected = await tcpConnect(target, remaining());
  if (connected.kind === 'timeout') return result('timeout', `${where} did not answer within ${timeoutMs} ms (unreachable or filtered)`);
  if (connected.kind === 'error') {
    if (connected.code === 'ECONNREFUSED') return result('connection_refused', `${where} refused the connection (nothing listens on the port)`);
    return result('unreachable', `${where} is unreachable: ${UNREACHABLE[connected.code] ?? connected.message} (${connected.code})`);
  }

  if (target.protocol === 'https') {
    const handshake = await tlsHandshake(connected.socket, target, remaining());
    if (handshake.kind === 'ok') return result('ok', `${where} completed a TLS handshake (${handshake.version})`);
    if (handshake.kind === 'timeout')
      return result('bad_response', `${where} accepted the connection but did not complete a TLS handshake within ${timeoutMs} ms`);
    if (handshake.alert) return result('bad_response', `${where} speaks TLS but refused the handshake (${handshake.reason})`);
    const again = await tcpConnect(target, remaining());
    const reply = again.kind === 'connected' ? await readHttpReply(again.socket, target, remaining()) : undefined;
    if (reply?.kind === 'http') {
      return result('tls_mismatch', `${where} speaks plain HTTP, not HTTPS (the TLS handshake failed: ${handshake.reason}); set the protocol to HTTP`);
    }
    return result('bad_response', `${where} accepted the connection but failed the TLS handshake (${handshake.reason}) and does not answer plain HTTP either`);
  }

  const reply = await readHttpReply(connected.socket, target, remaining());
  switch (reply.kind) {
    case 'http':
      return result('ok', `${where} answered HTTP (${reply.statusLine})`);
    case 'https_hint':
      return result(
        'tls_mismatch',
        `${where} speaks TLS, not plain HTTP (it answered "Client sent an HTTP request to an HTTPS server"); set the protocol to HTTPS`,
      );
    case 'other':
      return result('bad_response', `${where} answered an HTTP request with something that is neither HTTP nor TLS: "${printable(reply.bytes)}"`);
    case 'timeout':
      return result('bad_response', `${where} accepted the connection but sent no reply to an HTTP request within ${timeoutMs} ms`);
  }
  // TLS bytes, or a close without a reply (what a TLS server does with a plain request): confirm TLS
  const again = await tcpConnect(target, remaining());
  const handshake = again.kind === 'connected' ? await tlsHandshake(again.socket, target, remaining()) : undefined;
  if (handshake?.kind === 'ok') return result('tls_mismatch', `${where} speaks TLS (${handshake.version}), not plain HTTP; set the protocol to HTTPS`);
  const why =
    handshake === undefined
      ? 'a second connection failed'
      : handshake.kind === 'timeout'
        ? 'a TLS handshake timed out'
        : `a TLS handshake failed too (${handshake.reason})`;
  const what =
    reply.kind === 'tls'
      ? 'answered an HTTP request with TLS bytes'
      : `closed the connection without answering an HTTP request${reply.code ? ` (${reply.code})` : ''}`;
  return result('bad_response', `${where} ${what}, and ${why}`);
}

/** Plain words for the connect errors that mean "no path to the target". */
const UNREACHABLE: Record<string, string> = {
  EHOSTUNREACH: 'no route to the host',
  ENETUNREACH: 'the network is unreachable',
  EHOSTDOWN: 'the host is down',
};

/** `address:port`, IPv6 in brackets as in a URL. */
function endpoint(target: ProbeTarget): string {
  return `${hostPart(target.address)}:${target.port}`;
}

function hostPart(address: string): string {
  return isIP(address) === 6 ? `[${address}]` : address;
}

/** The code of a socket error; with several addresses tried (autoSelectFamily) Node reports an AggregateError. */
function errorCode(err: unknown): string {
  const e = err as { code?: unknown; errors?: { code?: unknown }[] };
  if (typeof e.code === 'string') return e.code;
  const inner = e.errors?.find((x) => typeof x.code === 'string');
  return typeof inner?.code === 'string' ? inner.code : 'ERROR';
}

/** A TCP connection within `ms`; on success the caller owns the socket and must destroy it. */
function tcpConnect(target: ProbeTarget, ms: number): Promise<ConnectOutcome> {
  return new Promise((resolve) => {
    const socket = netConnect({ host: target.address, port: target.port });
    // errors after the outcome is settled (a reset while the caller reads) must not go unhandled
    socket.on('error', () => {});
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ kind: 'timeout' });
    }, ms);
    socket.once('connect', () => {
      clearTimeout(timer);
      resolve({ kind: 'connected', socket });
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ kind: 'error', code: errorCode(err), message: err.message });
    });
  });
}

/**
 * A TLS handshake over a connected socket, without verifying the certificate (Caddy's HTTPS
 * transport skips verification too) and without SNI for an IP, as Caddy dials. Destroys the socket.
 */
function tlsHandshake(socket: Socket, target: ProbeTarget, ms: number): Promise<HandshakeOutcome> {
  return new Promise((resolve) => {
    const tls = tlsConnect({ socket, rejectUnauthorized: false, ...(isIP(target.address) ? {} : { servername: target.address }) });
    const finish = (outcome: HandshakeOutcome) => {
      clearTimeout(timer);
      tls.destroy();
      socket.destroy();
      resolve(outcome);
    };
    const timer = setTimeout(() => finish({ kind: 'timeout' }), ms);
    tls.once('secureConnect', () => finish({ kind: 'ok', version: tls.getProtocol() ?? 'TLS' }));
    tls.on('error', (err: Error & { code?: string; reason?: string }) => {
      const code = errorCode(err);
      // an alert from the peer means it speaks TLS and rejected something in our hello
      finish({ kind: 'error', code, reason: err.reason ?? code, alert: /_ALERT_/.test(code) });
    });
    tls.once('close', () => finish({ kind: 'error', code: 'ECONNRESET', reason: 'connection closed during the handshake', alert: false }));
  });
}

/** Sends `HEAD /` on a connected socket and classifies the first bytes of the reply. Destroys the socket. */
function readHttpReply(socket: Socket, target: ProbeTarget, ms: number): Promise<ReplyOutcome> {
  return new Promise((resolve) => {
    let received = Buffer.alloc(0);
    const finish = (outcome: ReplyOutcome) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(outcome);
    };
    const timer = setTimeout(() => finish(classifyReply(received, true) ?? { kind: 'timeout' }), ms);
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]).subarray(0, REPLY_LIMIT);
      const outcome = classifyReply(received, received.length >= REPLY_LIMIT);
      if (outcome) finish(outcome);
    });
    const ended = (code: string | undefined) => finish(classifyReply(received, true) ?? { kind: 'closed', code });
    socket.once('end', () => ended(undefined));
    socket.once('error', (err) => ended(errorCode(err)));
    socket.once('close', () => ended(undefined));
    socket.write(`HEAD / HTTP/1.1\r\nHost: ${hostPart(target.address)}\r\nConnection: close\r\n\r\n`);
  });
}

/**
 * What the first bytes of a reply to `HEAD /` are, or undefined while more bytes could change the
 * answer; `final` when no more will come. Empty and final is left to the caller (closed or silent).
 */
function classifyReply(bytes: Buffer, final: boolean): ReplyOutcome | undefined {
  if (bytes.length === 0) return undefined;
  // TLS records: 0x15 alert, 0x16 handshake
  if (bytes[0] === 0x15 || bytes[0] === 0x16) return { kind: 'tls' };
  const text = bytes.toString('latin1');
  if (!text.startsWith('HTTP/')) return 'HTTP/'.startsWith(text) && !final ? undefined : { kind: 'other', bytes };
  if (GO_HTTPS_HINT.startsWith(text) && !final) return undefined;
  if (text.startsWith(GO_HTTPS_HINT)) return { kind: 'https_hint' };
  const lineEnd = text.search(/\r?\n/);
  if (lineEnd < 0 && !final) return undefined;
  return { kind: 'http', statusLine: printable(Buffer.from(lineEnd < 0 ? text : text.slice(0, lineEnd), 'latin1')) };
}

/** Up to 60 bytes as text, control and non-ASCII bytes escaped, for a detail sentence. */
function printable(bytes: Buffer): string {
  const shown = [...bytes.subarray(0, 60)].map((b) => (b >= 0x20 && b < 0x7f && b !== 0x22 && b !== 0x5c ? String.fromCharCode(b) : escape(b))).join('');
  return bytes.length > 60 ? `${shown}…` : shown;
}

function escape(b: number): string {
  if (b === 0x0a) return '\\n';
  if (b === 0x0d) return '\\r';
  if (b === 0x22) return '\\"';
  if (b === 0x5c) return '\\\\';
  return `\\x${b.toString(16).padStart(2, '0')}`;
}
