/**
 * vcsim for tests: builds `vcsim/main.go` (beside this package's `src`) with Debian's Go from
 * Debian's govmomi source in GOPATH mode, offline, once per content of main.go (the binary is
 * cached under `$XDG_CACHE_HOME/gatehouse` or `/tmp`), and runs it on a loopback port.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { fileURLToPath } from 'node:url';

/** Where Debian's golang-github-vmware-govmomi-dev installs the source (GOPATH layout). */
export const DEBIAN_GOPATH = '/usr/share/gocode';
const MAIN_GO = fileURLToPath(new URL('../vcsim/main.go', import.meta.url));

/** Whether vcsim can be built here (Go and the govmomi source are installed). */
export function vcsimBuildable(): boolean {
  return existsSync(join(DEBIAN_GOPATH, 'src/github.com/vmware/govmomi/simulator')) && ['/usr/bin/go', '/usr/lib/go/bin/go'].some((p) => existsSync(p));
}

/** Builds vcsim unless the binary for this main.go is cached; returns its path and how long the build took (0 when cached). */
export async function buildVcsim(): Promise<{ path: string; buildMs: number }> {
  const hash = createHash('sha256').update(readFileSync(MAIN_GO)).digest('hex').slice(0, 16);
  const dir = join(process.env.XDG_CACHE_HOME ?? tmpdir(), process.env.XDG_CACHE_HOME ? 'gatehouse' : 'gatehouse-vcsim');
  const path = join(dir, `vcsim-${hash}`);
  if (existsSync(path)) return { path, buildMs: 0 };
  mkdirSync(dir, { recursive: true });
  const started = Date.now();
  const partial = `${path}.${process.pid}.tmp`;
  await new Promise<void>((resolve, reject) =>
    execFile(
      'go',
      ['build', '-o', partial, MAIN_GO],
      {
        env: {
          ...process.env,
          GOPATH: DEBIAN_GOPATH,
          GO111MODULE: 'off',
          GOFLAGS: '',
          GOPROXY: 'off',
          GOCACHE: join(dir, 'go-build-cache'),
        },
        timeout: 600_000,
      },
      (err) => (err ? reject(err) : resolve()),
    ),
  );
  renameSync(partial, path); // atomic: a concurrent build's result is as good
  return { path, buildMs: Date.now() - started };
}

/** A running vcsim. */
export interface Vcsim {
  /** `https://127.0.0.1:port/sdk`. */
  url: URL;
  username: string;
  password: string;
  /** The SHA-256 thumbprint of the certificate it serves, read from a TLS handshake. */
  thumbprint: string;
  process: ChildProcess;
  /** Stops it (SIGTERM, then waits for the exit). */
  stop(): Promise<void>;
}

/** Starts vcsim (on `port`, default any free one) and waits for its URL and certificate. */
export async function startVcsim(binary: string, options: { port?: number; vms?: number } = {}): Promise<Vcsim> {
  const username = 'gatehouse';
  const password = 'vcsim-test-password';
  const child = spawn(binary, ['-listen', `127.0.0.1:${options.port ?? 0}`, '-username', username, '-password', password, '-vms', String(options.vms ?? 2)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const url = await new Promise<URL>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`vcsim printed no URL within 20 s: ${stderr}`)), 20_000);
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.startsWith('https://'));
      if (line) {
        clearTimeout(timer);
        resolve(new URL(line.trim()));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`vcsim exited with ${code}: ${stderr}`));
    });
  });
  const thumbprint = await new Promise<string>((resolve, reject) => {
    const s = connect({ host: url.hostname, port: Number(url.port), rejectUnauthorized: false }, () => {
      resolve(s.getPeerCertificate().fingerprint256);
      s.end();
    });
    s.once('error', reject);
  });
  const exited = new Promise<void>((resolve) => (child.exitCode !== null ? resolve() : child.once('exit', () => resolve())));
  return {
    url,
    username,
    password,
    thumbprint,
    process: child,
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
