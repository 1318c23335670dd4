#!/usr/bin/env node
// The test command (`npm test`): installs and checks the system (ensure-system, preflight), runs
// the repository's own checks, typecheck and every package's
// tests through turbo, then prints one closing line `N passed, N failed, N skipped`.
// With GATEHOUSE_REQUIRE_SYSTEM=1 (CI) a skipped test counts as failed: nothing may be skipped.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const requireSystem = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';

// Install what is missing, then check it all before any suite starts: the preflight names each
// missing program and, in CI, ends the run here.
spawnSync(process.execPath, [join(root, 'scripts/ensure-system.mjs')], { stdio: 'inherit' });
const preflight = spawnSync(process.execPath, [join(root, 'scripts/preflight.mjs')], { stdio: 'inherit' });
if (preflight.status !== 0) {
  console.error('preflight failed: no test suite was started');
  console.log('0 passed, 1 failed');
  process.exit(1);
}

const workspaces = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).workspaces;
const packageDirs = workspaces.flatMap((pattern) => {
  if (!pattern.endsWith('/*')) return [join(root, pattern)];
  const parent = join(root, pattern.slice(0, -2));
  return existsSync(parent)
    ? readdirSync(parent, { withFileTypes: true })
        .filter((d) => d.isDirectory())
        .map((d) => join(parent, d.name))
    : [];
});
const resultFiles = [...packageDirs, join(root, 'scripts')].map((dir) => join(dir, '.test-results', 'vitest.json'));
for (const file of resultFiles) rmSync(file, { force: true });

// Typecheck in parallel; then the test suites one package at a time: several of them send real
// traffic between network namespaces and measure rates (iperf3), which a 2-core machine running
// the other suites at the same time would distort.
// GATEHOUSE_SANDBOX=off: controllers started by tests make no sandbox (the sandbox test turns it on);
// GATEHOUSE_PROXY=off: nor a Caddy on ports 80/443 (the proxy tests run theirs on free ports);
// GATEHOUSE_SSH=off: nor an SSH jump server on port 2222 (the SSH tests ask for one on a free port)
const turboRun = (args) =>
  spawnSync('npx', ['turbo', 'run', ...args, '--continue', '--output-logs=full', '--log-order=grouped'], {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, GATEHOUSE_SANDBOX: 'off', GATEHOUSE_PROXY: 'off', GATEHOUSE_SSH: 'off' },
  });
// The repository's own checks (the requirements table against the source, the preflight) first.
const scriptsSuite = spawnSync(
  'npx',
  ['vitest', 'run', '--root', 'scripts', '--reporter=default', '--reporter=json', '--outputFile.json=.test-results/vitest.json'],
  { cwd: root, stdio: 'inherit' },
);
const typecheck = turboRun(['typecheck']);
// the benchmarks are no workspace package, but they are how the speed targets are checked: a bench
// that no longer compiles against the code it measures fails the run (after the builds above,
// whose declarations it reads)
const benchTypecheck = spawnSync('npx', ['tsc', '-p', 'bench/tsconfig.json'], { cwd: root, stdio: 'inherit' });
if (benchTypecheck.status !== 0) console.error('bench/: tsc -p bench/tsconfig.json failed');
const turbo = turboRun(['test', '--concurrency=1']);

let passed = 0;
let failed = 0;
let skipped = 0;
const skippedNames = [];
for (const file of resultFiles) {
  if (!existsSync(file)) continue;
  const report = JSON.parse(readFileSync(file, 'utf8'));
  for (const suite of report.testResults ?? []) {
    if (suite.status === 'failed' && (suite.assertionResults ?? []).length === 0) failed++; // a file that failed to load
    for (const test of suite.assertionResults ?? []) {
      if (test.status === 'passed') passed++;
      else if (test.status === 'failed') failed++;
      else {
        skipped++;
        skippedNames.push(test.fullName);
      }
    }
  }
}
let turboFailed = turbo.status !== 0 || typecheck.status !== 0 || benchTypecheck.status !== 0 || scriptsSuite.status !== 0;
if (requireSystem && skipped > 0) {
  console.error(`GATEHOUSE_REQUIRE_SYSTEM=1: ${skipped} skipped test(s) count as failed:\n  ${skippedNames.join('\n  ')}`);
  failed += skipped;
  skipped = 0;
}
if (turboFailed && failed === 0) {
  console.error('turbo reported a failing task (typecheck or a test run that produced no report)');
  failed++;
}
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed > 0 ? 1 : 0);
