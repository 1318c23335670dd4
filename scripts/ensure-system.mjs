#!/usr/bin/env node
// Installs what the code, the sandbox and the tests need from the operating system, as the table
// in scripts/system-requirements.mjs lists it: on a fresh Debian machine, as root, every package
// whose program is missing is installed with `apt-get install --no-install-recommends` (each needed
// package is named, recommended ones are not relied on), and the machine's PostgreSQL cluster is
// started when nothing answers at DATABASE_URL (default 127.0.0.1:5432).
// Programs found only at run time are rows of that table too, e.g. runuser (util-linux; the tests'
// private PostgreSQL runs initdb and pg_ctl through it) and ssh (openssh-client; the web terminal).
//
// GATEHOUSE_SYSTEM_NO_INSTALL=prog[,prog…] leaves those programs (or packages) alone even when
// missing — how the preflight's failure is shown on purpose. This script prints what it did and
// never fails the run itself: scripts/preflight.mjs, run next, decides.
import { execFileSync, spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { REQUIREMENTS, SERVICES, missingPrograms, postgresAddress, postgresReachable } from './system-requirements.mjs';

const isRoot = process.getuid?.() === 0;
const noInstall = new Set(
  (process.env.GATEHOUSE_SYSTEM_NO_INSTALL ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean),
);

function run(cmd, args) {
  console.log(`[ensure-system] ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  return r.status === 0;
}

let aptUpdated = false;
function aptInstall(packages) {
  if (!aptUpdated) aptUpdated = run('apt-get', ['update']);
  return run('apt-get', ['install', '-y', '--no-install-recommends', ...packages]);
}

function ensurePrograms() {
  const isHeld = (row) => noInstall.has(row.program) || noInstall.has(row.package);
  const absent = missingPrograms();
  const missing = absent.filter((row) => !isHeld(row));
  const held = absent.filter(isHeld).map((row) => row.program);
  if (held.length) console.log(`[ensure-system] GATEHOUSE_SYSTEM_NO_INSTALL: leaving ${held.join(', ')} missing`);
  if (missing.length === 0) {
    const present = REQUIREMENTS.length - held.length;
    return console.log(`[ensure-system] ${present} of the ${REQUIREMENTS.length} programs of the requirements table are installed${held.length ? '' : ' (all)'}`);
  }
  const packages = [...new Set(missing.map((row) => row.package))];
  if (!isRoot) return console.log(`[ensure-system] missing ${missing.map((r) => r.program).join(', ')} and not root: cannot install ${packages.join(' ')}`);
  aptInstall(packages);
  const still = missingPrograms().filter((row) => packages.includes(row.package));
  if (still.length) console.log(`[ensure-system] still missing after apt-get: ${still.map((r) => r.program).join(', ')}`);
}

async function ensurePostgres() {
  const { host, port } = postgresAddress();
  if (await postgresReachable({ host, port })) return console.log(`[ensure-system] PostgreSQL answers on ${host}:${port}`);
  if (host !== '127.0.0.1' && host !== 'localhost')
    return console.log(`[ensure-system] PostgreSQL at ${host}:${port} does not answer; not managing a remote server`);
  if (!isRoot) return console.log('[ensure-system] PostgreSQL is not running and this is not root: cannot start it');
  let clusters = [];
  try {
    clusters = readdirSync('/etc/postgresql');
  } catch {
    aptInstall(SERVICES.map((s) => s.package));
    clusters = readdirSync('/etc/postgresql');
  }
  for (const version of clusters) run('pg_ctlcluster', ['--skip-systemctl-redirect', version, 'main', 'start']);
  for (let i = 0; i < 30 && !(await postgresReachable({ host, port })); i++) await new Promise((r) => setTimeout(r, 500));
  if (!(await postgresReachable({ host, port }))) return console.log('[ensure-system] PostgreSQL still does not answer');
  try {
    execFileSync('psql', ['-h', host, '-p', String(port), '-U', 'postgres', '-c', 'select 1'], { stdio: 'ignore' });
  } catch {
    console.log('[ensure-system] note: connecting as postgres needs a password here; set DATABASE_URL');
  }
  console.log('[ensure-system] PostgreSQL started');
}

ensurePrograms();
await ensurePostgres();
