/**
 * The `gatehouse` command's controller side (cli.ts hands every command but `agent` to
 * `runCommand`): the composition root. It wires the controller (@gatehouse/server), the
 * host agent (@gatehouse/host-agent, which loads a plugin by name) and the embedded sandbox.
 *
 *   gatehouse serve [--port 4000] [--host 127.0.0.1] [--data-dir .data/pglite] [--database-url URL]
 *                   [--agent-heartbeat-ms 10000] [--agent-offline-after-ms 30000] [--no-sandbox]
 *                   [--web-dir web/dist] [--proxy-http-port 80] [--proxy-https-port 443] [--caddy-admin SOCKET|URL] [--no-proxy] …
 *                   [--ssh-port 2222] [--ssh-host H] [--ssh-host-key FILE] [--no-ssh] [--metrics-listen HOST:PORT]
 *   gatehouse agent --controller URL[,URL...] --token T --plugin linux [--host ID] [--plugin-config JSON]
 *   gatehouse renew-certificates --controller URL --token T [--within-days 30]
 *   gatehouse print-schema [--out schema.graphql]
 *
 * `serve` uses PostgreSQL when --database-url or DATABASE_URL is set, otherwise PGlite in the
 * data directory (GATEHOUSE_DATA_DIR, default `.data/pglite`). Run as root, it also creates the
 * sandbox host with its in-process agent (src/sandbox of this package), unless --no-sandbox or GATEHOUSE_SANDBOX=off.
 * Web proxies are served by a Caddy the controller runs (`caddy` on PATH, its admin API on a unix
 * socket in .data/caddy) or reaches (--caddy-admin); see core/server/src/proxy/README.md.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  LETS_ENCRYPT_DIRECTORY,
  DEFAULT_SSH_PORT,
  caddyBinaryWorks,
  graphiqlByDefault,
  guardPostgresWriteDefect,
  printGatehouseSchema,
  startController,
  type Controller,
  type ControllerProxyOptions,
  type JumpServerOptions,
} from '@gatehouse/server';
import type { EmbeddedSandbox } from './sandbox/embedded-sandbox.js';

/** How long a stopping controller may take before it exits anyway. */
const STOP_GRACE_MS = 5000;

const USAGE = `usage:
  gatehouse serve [--port 4000] [--host 127.0.0.1] [--data-dir DIR] [--database-url URL]
                  [--agent-heartbeat-ms MS] [--agent-offline-after-ms MS] [--no-sandbox]
                  [--graphiql on|off] [--web-dir DIR|off]
      The web UI is served at / from --web-dir (GATEHOUSE_WEB_DIR; default: this checkout's
      web/dist, built by npm start); the API stays at /graphql.
      GraphiQL, and introspection without a token, are on unless NODE_ENV=production
      (GATEHOUSE_GRAPHIQL=on|off overrides). Stops within 5 s of SIGINT/SIGTERM, whatever runs.
      As root, also creates a sandbox host (network namespaces gh-sandbox*, two demo instances)
      with an in-process agent; --no-sandbox (or GATEHOUSE_SANDBOX=off) leaves it out.
      Prometheus metrics: GET /metrics on the API port with an admin token
      (Authorization: Bearer <token>); never open there. --metrics-listen HOST:PORT
      (GATEHOUSE_METRICS_LISTEN) also serves /metrics WITHOUT a token on that address only:
      use a private address the Prometheus server reaches. Default: no such listener.
  gatehouse agent --controller URL[,URL...] --token T --plugin linux [--host ID] [--plugin-config JSON]
                  [--drift-interval MS] [--stats-interval MS]
      Runs a host agent (token also from GATEHOUSE_AGENT_TOKEN); it reports traffic counters
      every --stats-interval ms (default 1000; 0: never).
  gatehouse renew-certificates --controller URL --token T [--within-days 30]
      Runs the certificate renewal scan now on a running controller (admin token, also from
      GATEHOUSE_TOKEN); exits 1 when a due certificate could not be renewed.
  gatehouse print-schema [--out FILE]

  Reverse proxy options of serve (web proxies; Caddy is run from PATH unless --caddy-admin):
      --proxy-http-port N     default 80 as root, else 8080      (GATEHOUSE_PROXY_HTTP_PORT)
      --proxy-https-port N    default 443 as root, else 8443     (GATEHOUSE_PROXY_HTTPS_PORT)
      --proxy-listen-host H   default all addresses              (GATEHOUSE_PROXY_LISTEN_HOST)
      --caddy-dir DIR         default .data/caddy: admin socket, certificates, log
      --caddy-bin PATH        default caddy                      (GATEHOUSE_CADDY_BIN)
      --caddy-admin S|URL     use a running Caddy: a unix socket path or http://127.0.0.1:PORT
      --acme-directory URL    default Let's Encrypt               (GATEHOUSE_ACME_DIRECTORY)
      --acme-email EMAIL      (GATEHOUSE_ACME_EMAIL)
      --acme-ca-roots FILES   comma-separated PEM files to trust for the ACME server itself
      --no-proxy              serve no web proxies (GATEHOUSE_PROXY=off)

  SSH jump server options of serve (ssh -J <user>@controller:2222 root@<instance>; keys from addSshKey):
      --ssh-port N            default 2222; 0 picks a free one   (GATEHOUSE_SSH_PORT)
      --ssh-host H            default the --host address         (GATEHOUSE_SSH_HOST)
      --ssh-host-key FILE     default ssh/ssh_host_ed25519_key beside the data directory, made on first start
                                                                 (GATEHOUSE_SSH_HOST_KEY)
      --no-ssh                no jump server and no web terminal (GATEHOUSE_SSH=off)
      --terminal-idle-timeout-ms MS  close a web terminal after this long without input (default 30 min)
                                                                 (GATEHOUSE_TERMINAL_IDLE_TIMEOUT_MS)
      --terminal-recordings DIR      where recorded web terminals go (asciicast v2; recording is off
                                     until an admin switches it on per user: setTerminalRecording);
                                     default recordings/ beside the data directory (GATEHOUSE_TERMINAL_RECORDINGS)
      --terminal-recording-max-mb N  size cap of one recording, default 16 (GATEHOUSE_TERMINAL_RECORDING_MAX_MB)
  The web terminal (/terminal, the UI's Terminal tab) runs ssh -J through this jump server; it needs \`ssh\`.`;

function positiveMs(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${flag} ${JSON.stringify(value)} must be a positive integer (milliseconds)`);
  return n;
}

async function serve(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: 'string', default: process.env.PORT ?? '4000' },
      host: { type: 'string', default: process.env.GATEHOUSE_HOST ?? '127.0.0.1' },
      'data-dir': { type: 'string', default: process.env.GATEHOUSE_DATA_DIR ?? '.data/pglite' },
      'database-url': { type: 'string', default: process.env.DATABASE_URL },
      'agent-heartbeat-ms': { type: 'string', default: process.env.GATEHOUSE_AGENT_HEARTBEAT_MS },
      'agent-offline-after-ms': { type: 'string', default: process.env.GATEHOUSE_AGENT_OFFLINE_AFTER_MS },
      'no-sandbox': { type: 'boolean', default: /^(0|off|false|no)$/i.test(process.env.GATEHOUSE_SANDBOX ?? '') },
      graphiql: { type: 'string', default: process.env.GATEHOUSE_GRAPHIQL ?? (graphiqlByDefault() ? 'on' : 'off') },
      'web-dir': { type: 'string', default: process.env.GATEHOUSE_WEB_DIR ?? DEFAULT_WEB_DIR },
      'metrics-listen': { type: 'string', default: process.env.GATEHOUSE_METRICS_LISTEN },
      ...PROXY_FLAGS,
      ...SSH_FLAGS,
    },
  });
  const agentPresence = {
    ...(values['agent-heartbeat-ms'] !== undefined ? { heartbeatMs: positiveMs('agent-heartbeat-ms', values['agent-heartbeat-ms']) } : {}),
    ...(values['agent-offline-after-ms'] !== undefined ? { offlineAfterMs: positiveMs('agent-offline-after-ms', values['agent-offline-after-ms']) } : {}),
  };
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port ${JSON.stringify(values.port)} must be an integer from 0 to 65535`);
  const url = values['database-url'];
  let store;
  if (url) {
    store = { kind: 'postgres' as const, url };
    // postgres.js' one known crash under reconnects is logged, not fatal (core/server/src/db/postgres-write-defect.ts)
    guardPostgresWriteDefect(console);
  } else {
    const dataDir = resolve(values['data-dir']);
    mkdirSync(dataDir, { recursive: true });
    store = { kind: 'pglite' as const, dataDir };
  }
  if (!/^(on|off)$/.test(values.graphiql)) throw new Error(`--graphiql ${JSON.stringify(values.graphiql)} must be on or off`);
  const proxy = await proxyOptions(values);
  const webAppDir = webAppDirOf(values['web-dir']);
  const ssh = sshOptions(values, resolve(values['data-dir']));
  const { terminal, recordings } = terminalOptions(values, resolve(values['data-dir']));
  const metricsListen = values['metrics-listen'] === undefined ? undefined : hostPort('metrics-listen', values['metrics-listen']);
  const controller = await startController({
    store,
    port,
    host: values.host,
    logger: console,
    agentPresence,
    proxy,
    ssh,
    terminal,
    recordings,
    graphiql: values.graphiql === 'on',
    webAppDir,
    metricsListen,
  });
  if (controller.bootstrapSecret) {
    process.stdout.write(
      [
        '',
        'First start: created the user "admin" and this admin API token. It is shown only once; keep it:',
        '',
        `    ${controller.bootstrapSecret}`,
        '',
        'and this one-time sign-in password of "admin" (change it after signing in):',
        '',
        `    password: ${controller.bootstrapPassword}`,
        '',
        ...(webAppDir ? [`Sign in to the web UI at ${controller.url.replace('127.0.0.1', 'localhost').replace(/\/graphql$/, '/')}`] : []),
        `For GraphiQL, open ${controller.url.replace('127.0.0.1', 'localhost')} and add the header  {"Authorization": "Bearer ${controller.bootstrapSecret}"}`,
        '',
      ].join('\n'),
    );
  }
  // the sandbox, when it starts, is removed again on every way out
  let sandbox: Promise<EmbeddedSandbox | undefined> = Promise.resolve(undefined);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.info(`received ${signal}, stopping`);
    // whatever is in flight (a long import, a hung database), the process is gone within seconds
    setTimeout(() => {
      console.error(`still stopping ${STOP_GRACE_MS / 1000} s after ${signal}; exiting now`);
      process.exit(1);
    }, STOP_GRACE_MS).unref();
    await (await sandbox.catch(() => undefined))?.stop();
    await controller.close();
    process.exit(0);
  };
  process.once('SIGINT', () => void stop('SIGINT'));
  process.once('SIGTERM', () => void stop('SIGTERM'));
  if (!values['no-sandbox']) {
    sandbox = startEmbeddedSandbox(controller);
    const started = await sandbox;
    if (started) process.once('exit', () => started.stopSync());
  }
}

/** The web UI's build in this checkout: core/cli/dist/cli.js → web/dist. */
const DEFAULT_WEB_DIR = fileURLToPath(new URL('../../../web/dist', import.meta.url));

/** The web UI directory to serve, or undefined (with the reason printed) when it holds no build; `off` serves none. */
function webAppDirOf(value: string): string | undefined {
  if (value === 'off') return undefined;
  const dir = resolve(value);
  if (existsSync(join(dir, 'index.html'))) return dir;
  console.warn(`web UI: ${dir} holds no build (npm run build -w @gatehouse/web, or npm start), so only the API is served`);
  return undefined;
}

/** Starts the sandbox and prints what to do with it, or why there is none and what works instead. */
async function startEmbeddedSandbox(controller: Controller): Promise<EmbeddedSandbox | undefined> {
  const { noSandboxInstructions, sandboxPrerequisiteProblem, startSandbox } = await import('./sandbox/embedded-sandbox.js');
  const problem = sandboxPrerequisiteProblem();
  if (problem) {
    process.stdout.write(noSandboxInstructions(problem, controller.url));
    return undefined;
  }
  try {
    const sandbox = await startSandbox(controller, { logger: console });
    process.stdout.write(sandbox.instructions);
    return sandbox;
  } catch (err) {
    process.stdout.write(noSandboxInstructions(`the sandbox did not start: ${(err as Error).message}`, controller.url));
    return undefined;
  }
}

const root = process.getuid?.() === 0;
const PROXY_FLAGS = {
  'proxy-http-port': { type: 'string', default: process.env.GATEHOUSE_PROXY_HTTP_PORT ?? (root ? '80' : '8080') },
  'proxy-https-port': { type: 'string', default: process.env.GATEHOUSE_PROXY_HTTPS_PORT ?? (root ? '443' : '8443') },
  'proxy-listen-host': { type: 'string', default: process.env.GATEHOUSE_PROXY_LISTEN_HOST ?? '' },
  'caddy-dir': { type: 'string', default: process.env.GATEHOUSE_CADDY_DIR ?? '.data/caddy' },
  'caddy-bin': { type: 'string', default: process.env.GATEHOUSE_CADDY_BIN ?? 'caddy' },
  'caddy-admin': { type: 'string', default: process.env.GATEHOUSE_CADDY_ADMIN },
  'acme-directory': { type: 'string', default: process.env.GATEHOUSE_ACME_DIRECTORY ?? LETS_ENCRYPT_DIRECTORY },
  'acme-email': { type: 'string', default: process.env.GATEHOUSE_ACME_EMAIL },
  'acme-ca-roots': { type: 'string', default: process.env.GATEHOUSE_ACME_CA_ROOTS },
  'no-proxy': { type: 'boolean', default: /^(0|off|false|no)$/i.test(process.env.GATEHOUSE_PROXY ?? '') },
} as const;

const SSH_FLAGS = {
  'ssh-port': { type: 'string', default: process.env.GATEHOUSE_SSH_PORT ?? String(DEFAULT_SSH_PORT) },
  'ssh-host': { type: 'string', default: process.env.GATEHOUSE_SSH_HOST },
  'ssh-host-key': { type: 'string', default: process.env.GATEHOUSE_SSH_HOST_KEY },
  'no-ssh': { type: 'boolean', default: /^(0|off|false|no)$/i.test(process.env.GATEHOUSE_SSH ?? '') },
  'terminal-idle-timeout-ms': { type: 'string', default: process.env.GATEHOUSE_TERMINAL_IDLE_TIMEOUT_MS },
  'terminal-recordings': { type: 'string', default: process.env.GATEHOUSE_TERMINAL_RECORDINGS },
  'terminal-recording-max-mb': { type: 'string', default: process.env.GATEHOUSE_TERMINAL_RECORDING_MAX_MB ?? '16' },
} as const;

/** The web terminal's idle timeout and where its recordings go, from the serve flags. */
function terminalOptions(
  values: { [K in keyof typeof SSH_FLAGS]?: string | boolean },
  dataDir: string,
): { terminal: { idleTimeoutMs?: number }; recordings: { dir: string; maxBytes: number } } {
  const idleTimeoutMs = positiveMs('terminal-idle-timeout-ms', values['terminal-idle-timeout-ms'] as string | undefined);
  const mb = Number(values['terminal-recording-max-mb']);
  if (!Number.isInteger(mb) || mb < 1 || mb > 4096)
    throw new Error(`--terminal-recording-max-mb ${JSON.stringify(values['terminal-recording-max-mb'])} must be a whole number of MB from 1 to 4096`);
  const dir = values['terminal-recordings'] ? resolve(String(values['terminal-recordings'])) : join(dirname(dataDir), 'recordings');
  return { terminal: idleTimeoutMs === undefined ? {} : { idleTimeoutMs }, recordings: { dir, maxBytes: mb * 1024 * 1024 } };
}

/** The jump server's options from the serve flags; undefined with --no-ssh. Port 0 picks a free one. */
function sshOptions(values: { [K in keyof typeof SSH_FLAGS]?: string | boolean } & { host?: string }, dataDir: string): JumpServerOptions | undefined {
  if (values['no-ssh']) return undefined;
  const port = String(values['ssh-port']) === '0' ? 0 : tcpPort('ssh-port', String(values['ssh-port']));
  const hostKeyPath = values['ssh-host-key'] ? resolve(String(values['ssh-host-key'])) : join(dirname(dataDir), 'ssh', 'ssh_host_ed25519_key');
  return { port, host: String(values['ssh-host'] ?? values.host ?? '127.0.0.1'), hostKeyPath };
}

/** `HOST:PORT` (`[v6]:PORT` for IPv6; port 0 picks a free one). */
function hostPort(flag: string, value: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+)):(\d{1,5})$/.exec(value);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new Error(`--${flag} ${JSON.stringify(value)} must be HOST:PORT (e.g. 10.0.0.5:9464; [::1]:9464 for IPv6)`);
  return { host: m[1] ?? m[2]!, port };
}

function tcpPort(flag: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new Error(`--${flag} ${JSON.stringify(value)} must be an integer from 1 to 65535`);
  return n;
}

/** The reverse proxy's options from the serve flags; undefined (with the reason printed) when there is none. */
async function proxyOptions(values: { [K in keyof typeof PROXY_FLAGS]?: string | boolean }): Promise<ControllerProxyOptions | undefined> {
  if (values['no-proxy']) return undefined;
  const httpPort = tcpPort('proxy-http-port', String(values['proxy-http-port']));
  const httpsPort = tcpPort('proxy-https-port', String(values['proxy-https-port']));
  if (httpPort === httpsPort) throw new Error(`--proxy-http-port and --proxy-https-port are both ${httpPort}; they must differ`);
  const acmeDirectory = String(values['acme-directory']);
  if (!/^https:\/\/[^\s]+$/.test(acmeDirectory)) throw new Error(`--acme-directory ${JSON.stringify(acmeDirectory)} must be an https:// URL`);
  const roots = values['acme-ca-roots']
    ? String(values['acme-ca-roots'])
        .split(',')
        .map((f) => resolve(f.trim()))
    : [];
  for (const file of roots) if (!existsSync(file)) throw new Error(`--acme-ca-roots: ${file} does not exist`);
  const caddyDir = resolve(String(values['caddy-dir']));
  const common = {
    settings: {
      listenHost: String(values['proxy-listen-host'] ?? ''),
      httpPort,
      httpsPort,
      acme: { directoryUrl: acmeDirectory, ...(values['acme-email'] ? { email: String(values['acme-email']) } : {}), trustedRootsPemFiles: roots },
    },
    logSocketPath: join(caddyDir, 'log.sock'),
  };
  const admin = values['caddy-admin'] ? String(values['caddy-admin']) : undefined;
  if (admin) {
    mkdirSync(caddyDir, { recursive: true, mode: 0o700 });
    if (/^https?:\/\//.test(admin)) {
      const url = new URL(admin);
      if (!['127.0.0.1', '[::1]', 'localhost'].includes(url.hostname))
        throw new Error(`--caddy-admin ${admin}: the admin API must be on loopback or a unix socket`);
      return { ...common, admin: { url: admin }, adminConfig: { listen: url.host, enforce_origin: true, origins: [url.host], config: { persist: false } } };
    }
    const socketPath = resolve(admin);
    return { ...common, admin: { socketPath }, adminConfig: { listen: `unix/${socketPath}`, config: { persist: false } } };
  }
  const binary = String(values['caddy-bin']);
  if (!(await caddyBinaryWorks(binary))) {
    console.warn(`web proxies: "${binary}" does not run here, so web proxies stay PENDING (install Debian's caddy, or pass --caddy-admin / --no-proxy)`);
    return undefined;
  }
  return { ...common, run: { dir: caddyDir, binary } };
}

/** `gatehouse renew-certificates`: the renewal scan through a running controller's API. */
async function renewCertificatesCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      controller: { type: 'string', default: process.env.GATEHOUSE_CONTROLLER ?? 'http://127.0.0.1:4000/graphql' },
      token: { type: 'string', default: process.env.GATEHOUSE_TOKEN },
      'within-days': { type: 'string', default: '30' },
    },
  });
  if (!values.token) throw new Error('--token (or GATEHOUSE_TOKEN) is required: an admin API token');
  const withinDays = Number(values['within-days']);
  if (!Number.isInteger(withinDays) || withinDays < 1 || withinDays > 3650)
    throw new Error(`--within-days ${JSON.stringify(values['within-days'])} must be an integer from 1 to 3650`);
  const query = `mutation($d: Int) { renewCertificates(input: { withinDays: $d }) { __typename
    ... on RenewCertificatesPayload { renewals { domain outcome notAfterBefore notAfterAfter detail } }
    ... on Error { code message } } }`;
  process.stdout.write(`renewal scan on ${values.controller}: certificates expiring within ${withinDays} days (this waits for Caddy to renew)\n`);
  const response = await fetch(values.controller, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${values.token}` },
    body: JSON.stringify({ query, variables: { d: withinDays } }),
  });
  const body = (await response.json()) as {
    data?: { renewCertificates: { __typename: string; renewals?: Renewal[]; code?: string; message?: string } };
    errors?: { message: string }[];
  };
  if (body.errors?.length) throw new Error(body.errors.map((e) => e.message).join('; '));
  const result = body.data!.renewCertificates;
  if (!result.renewals) throw new Error(`${result.code}: ${result.message}`);
  for (const r of result.renewals) process.stdout.write(`  ${r.outcome.padEnd(13)} ${r.domain}  ${r.detail}\n`);
  const count = (o: string) => result.renewals!.filter((r) => r.outcome === o).length;
  process.stdout.write(
    `${result.renewals.length} certificates: ${count('RENEWED')} renewed, ${count('FAILED')} failed, ${count('UPLOAD_NEEDED')} uploaded to replace, ${count('OK')} not due\n`,
  );
  if (count('FAILED') > 0) process.exitCode = 1;
}

interface Renewal {
  domain: string;
  outcome: string;
  detail: string;
}

function printSchemaCommand(argv: string[]): void {
  const { values } = parseArgs({ args: argv, options: { out: { type: 'string' } } });
  const sdl = printGatehouseSchema();
  if (values.out) writeFileSync(values.out, sdl);
  else process.stdout.write(sdl);
}

/** Runs `gatehouse <command> …rest` (every command but `agent`; cli.ts); prints the usage for an unknown one. */
export async function runCommand(command: string | undefined, rest: string[]): Promise<void> {
  switch (command) {
    case 'serve':
      return serve(rest);
    case 'renew-certificates':
      return renewCertificatesCommand(rest);
    case 'print-schema':
      return printSchemaCommand(rest);
    default:
      console.error(USAGE);
      process.exit(command ? 2 : 0);
  }
}
