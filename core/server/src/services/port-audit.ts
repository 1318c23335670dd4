/**
 * The port audit: host ports a service on the host itself listens on (sshd on 22, the agent
 * host's own services), as the host's agent reports them (`listeningSockets` of
 * `reportHostStatus`). A forward on such a port would take the service's traffic on the forwarded
 * addresses (DNAT comes before the socket), so creating, editing or importing one is refused with
 * PORT_CONFLICT naming the process; a forward that was there before the service appeared carries a
 * warning (`PortForward.hostPortWarning`) instead.
 *
 * A socket clashes with a forward when the protocol matches (a `both` forward: either), a port of
 * the forward's host range is the socket's port, and the socket's address is one the forward
 * answers on: the wildcard (`0.0.0.0`, `::`), the forward's host address, or — for a forward on
 * every public address — any of the host's public addresses. Loopback and other addresses the
 * forward does not answer on never clash.
 */
import { LISTENING_PROTOCOLS, MAX_LISTENING_SOCKETS, type ListeningSocketInput } from '@gatehouse/agent-protocol';
import { eq } from 'drizzle-orm';
import type { Executor } from '../db/database.js';
import { hostAgents, type ListeningSocketJson } from '../db/schema.js';
import { formatIp } from '../net/ip.js';
import { ValidationError } from '../support/errors.js';
import { validIp, type PortRange } from '../support/validate.js';
import type { ForwardProtocol } from './port-forward-spec.js';

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

/** Checks a reported socket list and returns its stored form (canonical addresses). */
export function validListeningSockets(field: string, values: readonly ListeningSocketInput[]): ListeningSocketJson[] {
  if (values.length > MAX_LISTENING_SOCKETS) throw new ValidationError(field, `${values.length} sockets`, `lists more than ${MAX_LISTENING_SOCKETS} sockets`);
  return values.map((s, i) => {
    const at = `${field}[${i}]`;
    if (!LISTENING_PROTOCOLS.includes(s.protocol)) throw new ValidationError(`${at}.protocol`, s.protocol, `must be one of ${LISTENING_PROTOCOLS.join(', ')}`);
    if (!Number.isInteger(s.port) || s.port < 1 || s.port > 65535) throw new ValidationError(`${at}.port`, s.port, 'is not a port (1-65535)');
    const process = s.process ?? null;
    if (process !== null && (typeof process !== 'string' || process.length === 0 || process.length > 64 || CONTROL.test(process)))
      throw new ValidationError(`${at}.process`, process, 'must be 1-64 characters without control characters');
    const pid = s.pid ?? null;
    if (pid !== null && (!Number.isInteger(pid) || pid < 1 || pid > 2 ** 31 - 1)) throw new ValidationError(`${at}.pid`, pid, 'is not a process id');
    return { protocol: s.protocol, address: formatIp(validIp(`${at}.address`, s.address)), port: s.port, process, pid };
  });
}

const WILDCARDS = new Set(['0.0.0.0', '::']);

/** What a forward claims on its host: the protocol, the host address (null: every public address) and the host ports. */
export interface ForwardClaim {
  protocol: ForwardProtocol;
  hostAddress: string | null;
  ports: PortRange;
}

/** The first listening socket a forward would shadow; undefined when none. */
export function listeningClash(sockets: readonly ListeningSocketJson[] | null, publicAddresses: readonly string[], claim: ForwardClaim): ListeningSocketJson | undefined {
  if (!sockets || sockets.length === 0) return undefined;
  const protocols = claim.protocol === 'both' ? ['TCP', 'UDP'] : [claim.protocol.toUpperCase()];
  const answered = new Set(claim.hostAddress ? [claim.hostAddress] : publicAddresses);
  return sockets.find(
    (s) =>
      protocols.includes(s.protocol) &&
      s.port >= claim.ports.start &&
      s.port <= claim.ports.end &&
      (WILDCARDS.has(s.address) || answered.has(s.address)),
  );
}

/** "sshd (pid 812) listens on 0.0.0.0:22/tcp". */
export function listeningText(s: ListeningSocketJson): string {
  const who = s.process ? `${s.process}${s.pid ? ` (pid ${s.pid})` : ''}` : s.pid ? `process ${s.pid}` : 'a process the agent cannot name';
  const address = s.address.includes(':') ? `[${s.address}]` : s.address;
  return `${who} listens on ${address}:${s.port}/${s.protocol.toLowerCase()}`;
}

/** The host's listening sockets as its agent last reported them; null when never reported. */
export async function hostListeningSockets(tx: Executor, hostId: string): Promise<ListeningSocketJson[] | null> {
  const [row] = await tx.select({ sockets: hostAgents.listeningSockets }).from(hostAgents).where(eq(hostAgents.hostId, hostId));
  return row?.sockets ?? null;
}

/** Host ports the listening sockets hold for a forward of `protocol` on `hostAddress`, as ranges (to skip when choosing a free port). */
export function listeningRanges(sockets: readonly ListeningSocketJson[] | null, publicAddresses: readonly string[], claim: Omit<ForwardClaim, 'ports'>): PortRange[] {
  const ranges: PortRange[] = [];
  for (const s of sockets ?? []) {
    if (listeningClash([s], publicAddresses, { ...claim, ports: { start: s.port, end: s.port } })) ranges.push({ start: s.port, end: s.port });
  }
  return ranges;
}
