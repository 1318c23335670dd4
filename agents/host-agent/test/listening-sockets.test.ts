/**
 * The port audit reads the kernel's socket tables: a real listener started here (a node server
 * in a child process, TCP and UDP, wildcard and loopback) is found with its port, address and
 * process name; table lines are parsed as the kernel writes them (IPv4, IPv6, v4-mapped).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { afterEach, expect, it } from 'vitest';
import { parseSocketTable, readListeningSockets } from '../src/listening-sockets.js';

const children: ChildProcess[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill();
});

/** A child node process named `name` (its argv0, hence its comm) listening on TCP and UDP; resolves with the ports. */
async function listener(name: string, host: string): Promise<{ tcp: number; udp: number; pid: number }> {
  const code = `
    const net = require('node:net'); const dgram = require('node:dgram');
    const s = net.createServer().listen(0, ${JSON.stringify(host)}, () => {
      const u = dgram.createSocket(${JSON.stringify(host.includes(':') ? 'udp6' : 'udp4')});
      u.bind(0, ${JSON.stringify(host)}, () => console.log(JSON.stringify({ tcp: s.address().port, udp: u.address().port })));
    });`;
  const child = spawn(process.execPath, ['-e', code], { argv0: name, stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  const line = await new Promise<string>((resolve, reject) => {
    child.stdout!.once('data', (d: Buffer) => resolve(d.toString()));
    child.once('exit', (c) => reject(new Error(`listener exited ${c}`)));
  });
  return { ...(JSON.parse(line) as { tcp: number; udp: number }), pid: child.pid! };
}

it('finds a real TCP and UDP listener with its process name and pid', async () => {
  const any = await listener('node', '0.0.0.0');
  const local = await listener('node', '127.0.0.1');
  const sockets = await readListeningSockets();
  expect(sockets).toContainEqual({ protocol: 'TCP', address: '0.0.0.0', port: any.tcp, process: 'node', pid: any.pid });
  expect(sockets).toContainEqual({ protocol: 'UDP', address: '0.0.0.0', port: any.udp, process: 'node', pid: any.pid });
  expect(sockets).toContainEqual({ protocol: 'TCP', address: '127.0.0.1', port: local.tcp, process: 'node', pid: local.pid });
  // the list is sorted and has no duplicates
  const keys = sockets.map((s) => `${s.protocol} ${s.address} ${s.port}`);
  expect(new Set(keys).size).toBe(keys.length);
});

it('stops reporting a listener once its process is gone', async () => {
  const l = await listener('node', '0.0.0.0');
  expect((await readListeningSockets()).some((s) => s.protocol === 'TCP' && s.port === l.tcp)).toBe(true);
  const child = children.pop()!;
  await new Promise((r) => {
    child.once('exit', r);
    child.kill();
  });
  expect((await readListeningSockets()).some((s) => s.protocol === 'TCP' && s.port === l.tcp)).toBe(false);
});

it('parses the kernel tables: LISTEN only for TCP, unconnected for UDP, IPv6 and v4-mapped addresses', () => {
  const tcp = [
    '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
    '   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0000000000000000 100 0 0 10 0',
    '   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2222 1 0000000000000000 100 0 0 10 0',
    '   2: 0A01A8C0:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3333 1 0000000000000000 100 0 0 10 0',
  ].join('\n');
  expect(parseSocketTable(tcp, 'TCP', false)).toEqual([
    { socket: { protocol: 'TCP', address: '0.0.0.0', port: 22 }, inode: '1111' },
    { socket: { protocol: 'TCP', address: '192.168.1.10', port: 80 }, inode: '3333' },
  ]);
  const tcp6 = [
    '  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
    '   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0',
    '   1: 00000000000000000000000001000000:0019 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5555 1 0000000000000000 100 0 0 10 0',
    '   2: 0000000000000000FFFF00000100007F:0035 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6666 1 0000000000000000 100 0 0 10 0',
    '   3: B80D0120000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 7777 1 0000000000000000 100 0 0 10 0',
  ].join('\n');
  expect(parseSocketTable(tcp6, 'TCP', true).map((s) => `${s.socket.address} ${s.socket.port}`)).toEqual([':: 22', '::1 25', '127.0.0.1 53', '2001:db8::1 443']);
  const udp = [
    '   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops',
    '  1: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 8888 2 0000000000000000 0',
    '  2: 0100007F:A000 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 9999 2 0000000000000000 0',
  ].join('\n');
  expect(parseSocketTable(udp, 'UDP', false)).toEqual([{ socket: { protocol: 'UDP', address: '0.0.0.0', port: 53 }, inode: '8888' }]);
});
