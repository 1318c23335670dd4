#!/usr/bin/env node
// Runs before any test suite (scripts/test.mjs): checks every program of the requirements table,
// PostgreSQL and root, prints the table, then one line per missing program naming the suites that
// need it and the Debian package that provides it. With GATEHOUSE_REQUIRE_SYSTEM=1 (CI) anything
// missing exits 1, so the run fails at once instead of in the middle of a suite; otherwise it
// exits 0 and names the suites that will skip.
import { REQUIREMENTS, ROOT_SUITES, SERVICES, locate, missingLine, postgresAddress, postgresReachable, searchPath } from './system-requirements.mjs';

const requireSystem = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const dirs = searchPath();

const rows = REQUIREMENTS.map((row) => ({ ...row, path: locate(row, dirs) }));
const width = (key, min) => Math.max(min, ...rows.map((row) => String(row[key] ?? '').length));
const [wp, wk, wl] = [width('program', 7), width('package', 7), width('path', 7)];
console.log(`[preflight] ${'program'.padEnd(wp)}  ${'package'.padEnd(wk)}  ${'found at'.padEnd(wl)}  suites`);
for (const row of rows) {
  console.log(`[preflight] ${row.program.padEnd(wp)}  ${row.package.padEnd(wk)}  ${(row.path ?? 'MISSING').padEnd(wl)}  ${row.suites.join(', ')}`);
}

const problems = rows.filter((row) => !row.path).map((row) => missingLine(row, dirs));
const skippedSuites = new Set(rows.filter((row) => !row.path).flatMap((row) => row.suites));

const { host, port } = postgresAddress();
if (!(await postgresReachable({ host, port }))) {
  for (const service of SERVICES) {
    problems.push(
      `${service.name} does not answer on ${host}:${port}: the ${service.suites.join(', ')} suites need it (${service.why}); Debian package ${service.package}`,
    );
    for (const suite of service.suites) skippedSuites.add(suite);
  }
}
if (process.getuid?.() !== 0) {
  problems.push(`not running as root: the ${ROOT_SUITES.join(', ')} suites need root (network namespaces, nftables, daemons)`);
  for (const suite of ROOT_SUITES) skippedSuites.add(suite);
}

for (const line of problems) console.error(`[preflight] ${line}`);
if (problems.length === 0) {
  console.log(`[preflight] all ${rows.length} programs, PostgreSQL on ${host}:${port} and root are there`);
  process.exit(0);
}
if (requireSystem) {
  console.error(`[preflight] GATEHOUSE_REQUIRE_SYSTEM=1: ${problems.length} requirement(s) missing; no suite was started`);
  process.exit(1);
}
console.error(`[preflight] these suites will skip the tests that need what is missing (CI would fail them): ${[...skippedSuites].join(', ')}`);
