/**
 * Server of bench/nat-scale.ts, run inside the instance namespace: accepts every connection,
 * writes one byte and ends it. One process, so it uses one of the machine's cores at most.
 *
 *   node tcp-server.ts ADDRESS PORT
 */
import { createServer } from 'node:net';

const [address, port] = process.argv.slice(2);
if (!address || !port) throw new Error('usage: tcp-server.ts ADDRESS PORT');

const server = createServer((socket) => {
  // the client resets the connection as soon as it has read the byte
  socket.on('error', () => undefined);
  socket.end('x');
});
server.listen({ host: address, port: Number(port), backlog: 4096 }, () => console.log('listening'));
process.once('SIGTERM', () => process.exit(0));
