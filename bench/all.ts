/**
 * Runs the benchmarks one after another and ends with one table of every target row they printed
 * (each bench prints its rows with the figure, the baseline measured in the same run, the ratio
 * and MET or NOT MET). A bench that fails is reported and the next one still runs; the exit code
 * is 1 when any bench failed to run (a NOT MET row is a result, not a failure).
 *
 *   npm run bench                         every bench below, in this order
 *   npm run bench -- proxy traffic        only these (names as in bench/<name>.ts)
 *
 * Each bench reads its own BENCH_* variables (see its file comment); they pass through.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));

/** The benches with target rows (issues 13, 14, 15, 20, 21, 23). */
const ALL = ['allocation', 'csv-import', 'bulk-growth', 'status-report', 'nat-scale', 'forward-live', 'dataplane-scale', 'proxy', 'traffic', 'ssh', 'ui-chart'];

/** A line that gives a verdict: the bench's row. */
const ROW = /\b(NOT MET|MET)\b/;

interface Outcome {
  name: string;
  code: number | null;
  seconds: number;
  rows: string[];
}

function run(name: string): Promise<Outcome> {
  const started = Date.now();
  const rows: string[] = [];
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(HERE, `${name}.ts`)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let partial = '';
    child.stdout.on('data', (chunk: Buffer) => {
      process.stdout.write(chunk);
      const lines = (partial + chunk.toString()).split('\n');
      partial = lines.pop()!;
      for (const line of lines) if (ROW.test(line)) rows.push(line.trim());
    });
    const done = (code: number | null) => {
      if (partial && ROW.test(partial)) rows.push(partial.trim());
      resolve({ name, code, seconds: (Date.now() - started) / 1000, rows });
    };
    child.on('error', (err) => {
      console.error(`bench ${name}: ${err.message}`);
      done(null);
    });
    child.on('close', (code) => done(code));
  });
}

const asked = process.argv.slice(2);
const unknown = asked.filter((n) => !ALL.includes(n) || !existsSync(join(HERE, `${n}.ts`)));
if (unknown.length > 0) {
  console.error(`unknown bench ${unknown.map((n) => JSON.stringify(n)).join(', ')}; one of: ${ALL.join(', ')}`);
  process.exit(2);
}
const outcomes: Outcome[] = [];
for (const name of asked.length > 0 ? asked : ALL) {
  console.log(`\n=== bench ${name} (load average ${loadavg()[0]!.toFixed(2)}) ===`);
  outcomes.push(await run(name));
}

console.log('\n=== summary: every target row, with its baseline from the same run ===');
for (const o of outcomes) {
  const status = o.code === 0 ? 'ran' : `FAILED (exit ${o.code ?? 'none'})`;
  console.log(`${o.name}: ${status} in ${o.seconds.toFixed(0)} s`);
  for (const row of o.rows) console.log(`  ${row}`);
  if (o.code === 0 && o.rows.length === 0) console.log('  (printed no target row)');
}
const met = outcomes.flatMap((o) => o.rows).filter((r) => !/NOT MET/.test(r) && /\bMET\b/.test(r)).length;
const rows = outcomes.reduce((n, o) => n + o.rows.length, 0);
console.log(`${met} of ${rows} rows MET; ${outcomes.filter((o) => o.code !== 0).length} of ${outcomes.length} benches failed to run`);
process.exit(outcomes.some((o) => o.code !== 0) ? 1 : 0);
