/**
 * The port audit: which sockets listen on the agent's host, read from the kernel's tables
 * (`/proc/net/tcp`, `tcp6`, `udp`, `udp6` of the agent's network namespace) with no helper
 * program. A socket's process is found by its inode among the `socket:[inode]` links of
 * `/proc/<pid>/fd/*`; processes whose descriptors the agent may not read leave `process` null.
 *
 * TCP sockets count in state LISTEN (0A); UDP sockets when bound to a port and connected to no
 * peer (a remote port of 0), which is how a UDP server waits.
 */
import { readFile, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { MAX_LISTENING_SOCKETS, type ListeningSocketInput } from '@gatehouse/agent-protocol';

const TABLES = [
  { file: 'tcp', protocol: 'TCP', v6: false },
  { file: 'tcp6', protocol: 'TCP', v6: true },
  { file: 'udp', protocol: 'UDP', v6: false },
  { file: 'udp6', protocol: 'UDP', v6: true },
] as const;

const TCP_LISTEN = '0A';

/** Where the tables are read: `/proc` by default (tests point it elsewhere). */
export interface ListeningSocketOptions {
  proc?: string;
}

/** An IPv4 address as /proc/net/tcp writes it: 8 hex digits, the 32-bit word in host (little-endian) order. */
function ipv4(hex: string): string {
  const n = Number.parseInt(hex, 16);
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24].join('.');
}

/** An IPv6 address from 32 hex digits (four little-endian 32-bit words), in its canonical text form. */
function ipv6(hex: string): string {
  const bytes: number[] = [];
  for (let w = 0; w < 4; w++) {
    const word = hex.slice(w * 8, w * 8 + 8);
    for (let b = 3; b >= 0; b--) bytes.push(Number.parseInt(word.slice(b * 2, b * 2 + 2), 16));
  }
  // ::ffff:a.b.c.d (an IPv4 address on a dual-stack socket) is written as IPv4
  if (bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) return bytes.slice(12).join('.');
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i]! << 8) | bytes[i + 1]!);
  // the longest run (2 or more) of zero groups becomes "::" (RFC 5952)
  let best = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) [best, bestLength] = [i, j - i];
    i = j;
  }
  const text = (gs: number[]) => gs.map((g) => g.toString(16)).join(':');
  return best < 0 ? text(groups) : `${text(groups.slice(0, best))}::${text(groups.slice(best + bestLength))}`;
}

/** The listening sockets of one /proc/net table, with their inodes. */
export function parseSocketTable(content: string, protocol: 'TCP' | 'UDP', v6: boolean): { socket: ListeningSocketInput; inode: string }[] {
  const out: { socket: ListeningSocketInput; inode: string }[] = [];
  for (const line of content.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const [localAddress, localPort] = f[1]!.split(':');
    const [, remotePort] = f[2]!.split(':');
    const state = f[3]!;
    if (protocol === 'TCP' ? state !== TCP_LISTEN : remotePort !== '0000') continue;
    const port = Number.parseInt(localPort!, 16);
    if (!(port > 0)) continue;
    out.push({ socket: { protocol, address: v6 ? ipv6(localAddress!) : ipv4(localAddress!), port }, inode: f[9]! });
  }
  return out;
}

/** Per socket inode, the process holding it (pid, name), for the inodes asked for; stops once all are found. */
async function socketOwners(proc: string, wanted: Set<string>): Promise<Map<string, { pid: number; process: string | null }>> {
  const owners = new Map<string, { pid: number; process: string | null }>();
  const pids = (await readdir(proc).catch(() => [] as string[])).filter((n) => /^[0-9]+$/.test(n));
  for (const pid of pids) {
    if (owners.size === wanted.size) break;
    const fds = await readdir(join(proc, pid, 'fd')).catch(() => [] as string[]);
    for (const fd of fds) {
      const link = await readlink(join(proc, pid, 'fd', fd)).catch(() => '');
      const m = /^socket:\[([0-9]+)\]$/.exec(link);
      if (!m || !wanted.has(m[1]!) || owners.has(m[1]!)) continue;
      const comm = await readFile(join(proc, pid, 'comm'), 'utf8').catch(() => null);
      owners.set(m[1]!, { pid: Number(pid), process: comm === null ? null : comm.trim().slice(0, 64) || null });
    }
  }
  return owners;
}

/**
 * The host's listening sockets, deduplicated (several processes sharing one socket, SO_REUSEPORT
 * groups), sorted by protocol, port and address, at most `MAX_LISTENING_SOCKETS`.
 */
export async function readListeningSockets(options: ListeningSocketOptions = {}): Promise<ListeningSocketInput[]> {
  const proc = options.proc ?? '/proc';
  const found: { socket: ListeningSocketInput; inode: string }[] = [];
  for (const t of TABLES) {
    // a kernel without IPv6 has no tcp6/udp6
    const content = await readFile(join(proc, 'net', t.file), 'utf8').catch(() => '');
    found.push(...parseSocketTable(content, t.protocol, t.v6));
  }
  const owners = found.length === 0 ? new Map() : await socketOwners(proc, new Set(found.map((f) => f.inode)));
  const unique = new Map<string, ListeningSocketInput>();
  for (const { socket, inode } of found) {
    const key = `${socket.protocol} ${socket.address} ${socket.port}`;
    const owner = owners.get(inode);
    const known = unique.get(key);
    if (known && known.process) continue;
    unique.set(key, { ...socket, process: owner?.process ?? null, pid: owner?.pid ?? null });
  }
  return [...unique.values()]
    .sort((a, b) => a.protocol.localeCompare(b.protocol) || a.port - b.port || a.address.localeCompare(b.address))
    .slice(0, MAX_LISTENING_SOCKETS);
}
