/**
 * Prober of bench/forward-live.ts, run inside the client namespace. Commands on stdin, one a line:
 *
 *   until ID ADDRESS PORT WANT DEADLINE_MS
 *     connects to ADDRESS:PORT again and again (one attempt every millisecond) until an attempt's
 *     outcome is WANT: `got:TEXT` (the server's whole answer) or `closed` (refused, reset or no
 *     answer within 1 s: the forward is gone). Prints `ready ID` once the first attempt has
 *     finished (with its outcome: the caller checks the forward was not already in that state),
 *     then `ok ID NS` (CLOCK_MONOTONIC nanoseconds of the first wanted outcome) or `timeout ID`.
 *   all ID ADDRESS FIRST_PORT COUNT WANT CONCURRENCY DEADLINE_MS
 *     every port FIRST_PORT..FIRST_PORT+COUNT-1 until each answers WANT: while none does, only the
 *     first, middle and last port are polled every millisecond (so the prober does not compete for
 *     the CPU with what it measures); once one does, every port still pending is tried,
 *     CONCURRENCY at a time, again and again. Prints `ready ID`, then `ok ID FIRST_NS LAST_NS
 *     SWEEP_STARTED_NS` (first and last wanted outcome, and when the sweep of all ports began) or
 *     `timeout ID PENDING`.
 */
import { connect } from 'node:net';
import { createInterface } from 'node:readline';

// long enough that a loaded machine's slow answer is not taken for a closed port (a refused one is answered at once)
const ATTEMPT_TIMEOUT_MS = 1000;

/** One connection: `got:TEXT` when the server answered and ended, otherwise `closed`. */
function attempt(address: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: address, port });
    let data = '';
    let settled = false;
    const done = (outcome: string) => {
      if (settled) return;
      settled = true;
      socket.destroy();
      resolve(outcome);
    };
    socket.setTimeout(ATTEMPT_TIMEOUT_MS, () => done('closed'));
    socket.on('data', (b) => (data += b.toString()));
    socket.once('end', () => done(data ? `got:${data}` : 'closed'));
    socket.once('error', () => done('closed'));
    socket.once('close', () => done(data ? `got:${data}` : 'closed'));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(id: string, address: string, port: number, want: string, deadlineMs: number): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  let first = true;
  for (;;) {
    const outcome = await attempt(address, port);
    const at = process.hrtime.bigint();
    if (first) console.log(`ready ${id} ${outcome}`);
    first = false;
    if (outcome === want) return void console.log(`ok ${id} ${at}`);
    if (Date.now() > deadline) return void console.log(`timeout ${id}`);
    await sleep(1);
  }
}

async function all(id: string, address: string, firstPort: number, count: number, want: string, concurrency: number, deadlineMs: number): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  const pending = new Set(Array.from({ length: count }, (_, i) => firstPort + i));
  const sentinels = [...new Set([firstPort, firstPort + Math.floor(count / 2), firstPort + count - 1])];
  let firstAt: bigint | undefined;
  let lastAt = 0n;
  const tryPort = async (port: number) => {
    if ((await attempt(address, port)) !== want) return;
    const at = process.hrtime.bigint();
    firstAt ??= at;
    lastAt = at;
    pending.delete(port);
  };
  let ready = false;
  while (firstAt === undefined) {
    await Promise.all(sentinels.filter((p) => pending.has(p)).map(tryPort));
    if (!ready) console.log(`ready ${id}`);
    ready = true;
    if (Date.now() > deadline) return void console.log(`timeout ${id} ${pending.size}`);
    if (firstAt === undefined) await sleep(1);
  }
  const sweepStarted = process.hrtime.bigint();
  while (pending.size > 0) {
    if (Date.now() > deadline) return void console.log(`timeout ${id} ${pending.size}`);
    const ports = [...pending];
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(concurrency, ports.length) }, async () => {
        while (next < ports.length) await tryPort(ports[next++]!);
      }),
    );
  }
  console.log(`ok ${id} ${firstAt} ${lastAt} ${sweepStarted}`);
}

createInterface({ input: process.stdin }).on('line', (line) => {
  const [command, id, address, ...rest] = line.trim().split(' ');
  if (command === 'until' && id && address && rest.length === 3) void until(id, address, Number(rest[0]), rest[1]!, Number(rest[2]));
  else if (command === 'all' && id && address && rest.length === 5)
    void all(id, address, Number(rest[0]), Number(rest[1]), rest[2]!, Number(rest[3]), Number(rest[4]));
  else throw new Error(`forward-live probe: cannot parse "${line}"`);
});
process.stdin.once('end', () => process.exit(0));
