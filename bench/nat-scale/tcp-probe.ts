/**
 * Prober of bench/nat-scale.ts, run inside the client namespace for the whole benchmark: on each
 * stdin line `probe ID ADDRESS PORT DEADLINE_MS` it connects to ADDRESS:PORT again and again, one
 * attempt every millisecond, until an attempt reads the server's byte. It prints `ready ID` once
 * the first attempt has finished (so the caller knows polling is under way), then `ok ID NS` with
 * the CLOCK_MONOTONIC time of the first success in nanoseconds (the same clock as the caller's
 * `process.hrtime.bigint()`, namespaces do not change it), or `timeout ID` after DEADLINE_MS.
 */
import { connect } from 'node:net';
import { createInterface } from 'node:readline';

const ATTEMPT_TIMEOUT_MS = 200;
const INTERVAL_MS = 1;

/** One connection attempt: resolves with the monotonic time its byte arrived, or undefined. */
function attempt(address: string, port: number): Promise<bigint | undefined> {
  return new Promise((resolve) => {
    const socket = connect({ host: address, port });
    socket.setTimeout(ATTEMPT_TIMEOUT_MS, () => {
      socket.destroy();
      resolve(undefined);
    });
    socket.once('data', () => {
      const at = process.hrtime.bigint();
      socket.resetAndDestroy();
      resolve(at);
    });
    socket.once('error', () => resolve(undefined));
    socket.once('close', () => resolve(undefined));
  });
}

async function probe(id: string, address: string, port: number, deadlineMs: number): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  let first = true;
  for (;;) {
    const at = await attempt(address, port);
    if (first) console.log(`ready ${id}`);
    first = false;
    if (at !== undefined) return void console.log(`ok ${id} ${at}`);
    if (Date.now() > deadline) return void console.log(`timeout ${id}`);
    await new Promise((resolve) => setTimeout(resolve, INTERVAL_MS));
  }
}

createInterface({ input: process.stdin }).on('line', (line) => {
  const [command, id, address, port, deadlineMs] = line.trim().split(' ');
  if (command !== 'probe' || !id || !address || !port || !deadlineMs) throw new Error(`tcp-probe: cannot parse "${line}"`);
  void probe(id, address, Number(port), Number(deadlineMs));
});
process.stdin.once('end', () => process.exit(0));
