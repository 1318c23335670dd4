#!/usr/bin/env node
// Makes sure the system services and tools the tests use are there: PostgreSQL (DATABASE_URL,
// default the local server on 127.0.0.1:5432), nft, ip, iperf3, iptables (the nat-scale bench's baseline),
// caddy and pebble (the reverse proxy and its ACME tests), dockerd (docker.io), lxd and a static
// busybox (the Docker and LXD plugins' tests build their images from it). On a fresh machine, as root,
// installs the missing Debian packages and starts PostgreSQL's cluster. Prints what it did; never
// fails the run by itself (the tests decide, and in CI a skipped system test fails).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import net from 'node:net';

const url = new URL(process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres');
const host = url.hostname || '127.0.0.1';
const port = Number(url.port || 5432);

function reachable() {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port, timeout: 2000 }, () => {
      socket.end();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
    socket.on('timeout', () => {
      socket.destroy();
      resolve(false);
    });
  });
}

function run(cmd, args) {
  console.log(`[ensure-system] ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  return r.status === 0;
}

async function ensurePostgres() {
  if (await reachable()) return console.log(`[ensure-system] PostgreSQL answers on ${host}:${port}`);
  const isLocal = host === '127.0.0.1' || host === 'localhost';
  if (!isLocal) return console.log(`[ensure-system] PostgreSQL at ${host}:${port} does not answer; not managing a remote server`);
  if (process.getuid?.() !== 0)
    return console.log('[ensure-system] PostgreSQL is not running and this is not root: PostgreSQL tests will skip (and fail in CI)');
  let clusters = [];
  try {
    clusters = readdirSync('/etc/postgresql');
  } catch {
    aptInstall(['postgresql']);
    clusters = readdirSync('/etc/postgresql');
  }
  for (const version of clusters) run('pg_ctlcluster', ['--skip-systemctl-redirect', version, 'main', 'start']);
  for (let i = 0; i < 30 && !(await reachable()); i++) await new Promise((r) => setTimeout(r, 500));
  if (!(await reachable())) return console.log('[ensure-system] PostgreSQL still does not answer');
  // trust auth for the local test user, as on the developer machines
  try {
    execFileSync('psql', ['-h', host, '-p', String(port), '-U', 'postgres', '-c', 'select 1'], { stdio: 'ignore' });
  } catch {
    console.log('[ensure-system] note: connecting as postgres needs a password here; set DATABASE_URL');
  }
  console.log('[ensure-system] PostgreSQL started');
}

let aptUpdated = false;
function aptInstall(packages) {
  if (!aptUpdated) aptUpdated = run('apt-get', ['update']);
  return run('apt-get', ['install', '-y', '--no-install-recommends', ...packages]);
}

function have(tool) {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin', '/usr/bin'];
  return dirs.some((dir) => dir && existsSync(join(dir, tool)));
}

function ensureTools() {
  const wanted = {
    nft: 'nftables',
    ip: 'iproute2',
    iperf3: 'iperf3',
    iptables: 'iptables',
    caddy: 'caddy',
    pebble: 'pebble',
    dockerd: 'docker.io',
    lxd: 'lxd',
    busybox: 'busybox-static',
  };
  const missing = Object.entries(wanted)
    .filter(([tool]) => !have(tool))
    .map(([, pkg]) => pkg);
  if (missing.length === 0) return console.log(`[ensure-system] ${Object.keys(wanted).join(', ')} are installed`);
  if (process.getuid?.() !== 0) return console.log(`[ensure-system] missing ${missing.join(', ')} and not root: namespace tests will skip (and fail in CI)`);
  aptInstall(missing);
}

ensureTools();
await ensurePostgres();
