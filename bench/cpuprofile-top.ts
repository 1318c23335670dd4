/**
 * Where a CPU profile (`node --cpu-prof`, e.g. from `BENCH_SSH_CPU_PROF`) spent its time: the
 * functions with the most self time, and the same summed per file (module), with milliseconds and
 * shares of the sampled time. With `--windows <file>` (a JSON list of [start, end] in µs of the
 * monotonic clock, as bench/ssh.ts writes for its through copies), only the samples taken inside
 * those windows count, and idle time is left out of the shares.
 *
 *   npx tsx bench/cpuprofile-top.ts <file.cpuprofile> [--windows <file.json>] [--rows 25]
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

const usage = 'usage: npx tsx bench/cpuprofile-top.ts <file.cpuprofile> [--windows <file.json>] [--rows N]';
const { values, positionals } = parseArgs({ allowPositionals: true, options: { windows: { type: 'string' }, rows: { type: 'string', default: '25' } } });
const file = positionals[0];
if (!file || positionals.length > 1) {
  console.error(usage);
  process.exit(2);
}
const rows = Number(values.rows);
if (!Number.isInteger(rows) || rows < 1) {
  console.error(`--rows: ${JSON.stringify(values.rows)} is not a positive whole number`);
  process.exit(2);
}
const windows = values.windows ? (JSON.parse(readFileSync(values.windows, 'utf8')) as unknown) : undefined;
if (windows !== undefined && (!Array.isArray(windows) || !windows.every((w) => Array.isArray(w) && w.length === 2 && w.every(Number.isFinite)))) {
  console.error(`--windows: ${values.windows} does not hold a list of [start, end] pairs`);
  process.exit(2);
}
const inWindow = (t: number) => !windows || (windows as [number, number][]).some(([a, b]) => t >= a && t <= b);

const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const self = new Map<number, number>();
let t = profile.startTime;
profile.samples.forEach((id, i) => {
  const delta = profile.timeDeltas[i] ?? 0;
  t += delta;
  if (!inWindow(t)) return;
  if (windows && byId.get(id)!.callFrame.functionName === '(idle)') return;
  self.set(id, (self.get(id) ?? 0) + delta);
});
const total = [...self.values()].reduce((a, b) => a + b, 0);

const shortUrl = (url: string) =>
  url
    .replace(/^file:\/\//, '')
    .replace(/^.*node_modules\//, '~/')
    .replace(/^.*\/(core|agents)\//, '$1/');
const perFunction = new Map<string, number>();
const perFile = new Map<string, number>();
for (const [id, micros] of self) {
  const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
  const where = url ? shortUrl(url) : '(native)';
  const key = `${functionName || '(anonymous)'} ${where}${url ? `:${lineNumber + 1}` : ''}`;
  perFunction.set(key, (perFunction.get(key) ?? 0) + micros);
  perFile.set(where, (perFile.get(where) ?? 0) + micros);
}
const show = (title: string, entries: Map<string, number>) => {
  console.log(title);
  for (const [key, micros] of [...entries].sort((a, b) => b[1] - a[1]).slice(0, rows))
    console.log(`${(micros / 1000).toFixed(0).padStart(7)} ms ${((100 * micros) / total).toFixed(1).padStart(5)}%  ${key}`);
};
console.log(`${file}: ${(total / 1e6).toFixed(2)} s sampled${windows ? ' (busy, inside the windows)' : ''}`);
show('self time per function:', perFunction);
show('self time per file:', perFile);
