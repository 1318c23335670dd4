/**
 * Load generator of bench/nat-scale.ts, run inside the client namespace: keeps CONCURRENCY TCP
 * connections in flight to ADDRESS:PORT. Each one connects, reads the server's byte and is closed
 * with a reset, so neither side keeps the connection in TIME_WAIT and the client's ports never run
 * out. Connections that read their byte during DURATION_MS, after WARMUP_MS, count. Prints `start`
 * when the counted window opens, then one JSON line (`LoadResult`) when it closes.
 *
 *   node tcp-load.ts ADDRESS PORT CONCURRENCY WARMUP_MS DURATION_MS
 */
import { connect } from 'node:net';

/** What one load run measured. */
export interface LoadResult {
  connections: number;
  failures: Record<string, number>;
  seconds: number;
  perSecond: number;
  /** This process's CPU time over the window, as a share of one core. */
  cpuShare: number;
}

const [address, port, concurrency, warmupMs, durationMs] = process.argv.slice(2);
if (!address || !port || !concurrency || !warmupMs || !durationMs) throw new Error('usage: tcp-load.ts ADDRESS PORT CONCURRENCY WARMUP_MS DURATION_MS');

let counting = false;
let stopped = false;
let connections = 0;
let inFlight = 0;
const failures: Record<string, number> = {};

function fail(code: string): void {
  if (counting) failures[code] = (failures[code] ?? 0) + 1;
}

function connectOnce(): void {
  if (stopped) return;
  inFlight++;
  const socket = connect({ host: address, port: Number(port) });
  let done = false;
  socket.setTimeout(3000, () => {
    done = true;
    fail('timeout');
    socket.destroy();
  });
  socket.once('data', () => {
    done = true;
    if (counting) connections++;
    socket.resetAndDestroy();
  });
  socket.once('end', () => {
    if (!done) fail('closed-without-data');
    done = true;
    socket.resetAndDestroy();
  });
  socket.once('error', (err: NodeJS.ErrnoException) => {
    if (!done) fail(err.code ?? 'error');
    done = true;
  });
  socket.once('close', () => {
    inFlight--;
    setImmediate(connectOnce);
  });
}

for (let i = 0; i < Number(concurrency); i++) connectOnce();
await new Promise((resolve) => setTimeout(resolve, Number(warmupMs)));
counting = true;
const startCpu = process.cpuUsage();
const start = process.hrtime.bigint();
console.log('start');
await new Promise((resolve) => setTimeout(resolve, Number(durationMs)));
counting = false;
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
const cpu = process.cpuUsage(startCpu);
stopped = true;
// let the connections in flight finish, so none is left half-open in the kernel
for (let i = 0; i < 100 && inFlight > 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
const result: LoadResult = { connections, failures, seconds, perSecond: connections / seconds, cpuShare: (cpu.user + cpu.system) / 1e6 / seconds };
console.log(JSON.stringify(result));
process.exit(0);
