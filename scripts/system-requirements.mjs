// The one table of what Gatehouse needs from the operating system: every external program the
// code, the sandbox and the tests start (or that a daemon we start runs in turn), the Debian
// package that provides it, the test suites that need it, and which hosts need it at run time.
// scripts/ensure-system.mjs installs from it, scripts/preflight.mjs checks it before any suite,
// scripts/test/system-requirements.test.mjs keeps it true against the source, and the operator
// sections of the plugin and agent READMEs are generated from it (`node scripts/system-requirements.mjs --write-readmes`).
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import net from 'node:net';

/** The test suites, by the short names the table uses (a workspace package's name without @gatehouse/, or a top folder). */
export const SUITES = ['sdk', 'dataplane', 'host-agent', 'plugin-linux', 'plugin-docker', 'plugin-lxd', 'plugin-proxmox', 'plugin-esxi', 'server', 'cli', 'caddy-api-client', 'web', 'bench', 'scripts'];


// cli: the embedded sandbox (core/cli/src/sandbox) and its test; web: the browser test on that sandbox
const NAMESPACE_SUITES = ['sdk', 'dataplane', 'host-agent', 'plugin-linux', 'plugin-docker', 'plugin-lxd', 'plugin-proxmox', 'plugin-esxi', 'server', 'cli', 'web', 'bench'];
const DATAPLANE_SUITES = ['dataplane', 'host-agent', 'plugin-linux', 'plugin-docker', 'plugin-lxd', 'plugin-proxmox', 'plugin-esxi', 'server', 'cli', 'web', 'bench'];
/** Where Debian's golang-github-vmware-govmomi-dev puts the simulator's source, from which the tests build vcsim. */
export const GOVMOMI_SOURCE = '/usr/share/gocode/src/github.com/vmware/govmomi/simulator';
const DOCKER_SUITES = ['plugin-docker', 'host-agent'];
const LXD_SUITES = ['plugin-lxd', 'host-agent'];
const IMAGE_SUITES = ['plugin-docker', 'plugin-lxd', 'host-agent'];

/**
 * One row per program. `startedBy` names the daemon that runs it when none of our code does
 * (found by no source scan, so listed here by hand); `builtIn` names the file that builds the
 * program's name at run time; `verify` checks the build; `roles` say where an operator needs it
 * outside the tests; `source` marks a program the tests build from a package's source (present when
 * that source is), not one found on PATH; `at` gives the full path of a program outside PATH. Roles: agent — every host whose agent runs a dataplane-backed plugin (Linux,
 * Docker, LXD, Proxmox, ESXi); docker / lxd — hosts running that plugin; controller — the controller (web
 * proxies, the root sandbox).
 */
export const REQUIREMENTS = [
  { program: 'chromium', package: 'chromium', suites: ['web', 'bench'], roles: [], startedBy: 'playwright-core', why: 'the web UI end-to-end tests and the chart benchmark in headless Chromium' },
  { program: 'nft', package: 'nftables', suites: DATAPLANE_SUITES, roles: ['agent', 'controller'], why: 'the dataplane: NAT, firewall, counters (nft -j)' },
  { program: 'env', package: 'coreutils', suites: DATAPLANE_SUITES, roles: ['agent', 'controller'], why: "starts nft with glibc malloc tunables for the dataplane's transactions" },
  { program: 'ip', package: 'iproute2', suites: NAMESPACE_SUITES, roles: ['agent', 'controller'], why: 'links, addresses, network namespaces' },
  {
    program: 'tc',
    package: 'iproute2',
    suites: ['dataplane', 'host-agent', 'plugin-linux', 'plugin-docker', 'plugin-lxd', 'plugin-proxmox', 'cli', 'web'],
    roles: ['agent', 'controller'],
    why: 'bandwidth shaping (htb, ifb)',
  },
  { program: 'ss', package: 'iproute2', suites: ['dataplane', 'host-agent', 'bench'], roles: [], why: 'waiting for test servers to listen; the SSH bench samples each hop\'s TCP queues' },
  { program: 'sysctl', package: 'procps', suites: NAMESPACE_SUITES, roles: ['agent', 'controller'], why: 'IP forwarding in the host and sandbox namespaces' },
  {
    program: 'iperf3',
    package: 'iperf3',
    suites: ['sdk', 'dataplane', 'host-agent', 'plugin-linux', 'plugin-docker', 'plugin-lxd', 'plugin-proxmox', 'plugin-esxi', 'cli'],
    roles: [],
    why: 'measuring shaped rates',
  },
  {
    program: 'iptables',
    package: 'iptables',
    suites: [...DOCKER_SUITES, 'dataplane'],
    roles: ['docker'],
    startedBy: 'dockerd',
    why: "Docker's own rules (and the tests that check we leave them alone, fail2ban-style chains among them)",
  },
  { program: 'time', package: 'time', suites: ['bench'], roles: [], at: '/usr/bin/time', why: 'peak memory of nft applying 250,000 forwards (dataplane-scale bench)' },
  { program: 'iptables-legacy', package: 'iptables', suites: ['bench'], roles: [], why: "the nat-scale bench's baseline chain", builtIn: 'bench/nat-scale.ts' },
  {
    program: 'iptables-legacy-restore',
    package: 'iptables',
    suites: ['bench'],
    roles: [],
    why: "loading the nat-scale bench's baseline chain",
    builtIn: 'bench/nat-scale.ts',
  },
  {
    program: 'caddy',
    package: 'caddy',
    suites: ['caddy-api-client', 'server', 'cli', 'web', 'bench'],
    roles: ['controller'],
    why: 'the reverse proxy the controller drives',
  },
  { program: 'pebble', package: 'pebble', suites: ['caddy-api-client', 'server'], roles: [], why: 'a local ACME server for certificate tests' },
  { program: 'pebble-challtestsrv', package: 'pebble', suites: ['caddy-api-client', 'server'], roles: [], why: "pebble's DNS for certificate tests" },
  { program: 'openssl', package: 'openssl', suites: ['caddy-api-client', 'server', 'bench', 'plugin-proxmox', 'host-agent'], roles: [], why: 'test certificates and CAs (the Proxmox test server\'s too)' },
  { program: 'dockerd', package: 'docker.io', suites: DOCKER_SUITES, roles: ['docker'], why: 'the Docker Engine' },
  { program: 'containerd', package: 'containerd', suites: DOCKER_SUITES, roles: ['docker'], startedBy: 'dockerd', why: "dockerd's container runtime" },
  { program: 'runc', package: 'runc', suites: DOCKER_SUITES, roles: ['docker'], startedBy: 'dockerd', why: 'runs the containers' },
  { program: 'nsenter', package: 'util-linux', suites: DOCKER_SUITES, roles: ['docker'], why: "reading a container's links from its network namespace" },
  { program: 'lxd', package: 'lxd', suites: LXD_SUITES, roles: ['lxd'], why: 'the LXD daemon' },
  {
    program: 'dnsmasq',
    package: 'dnsmasq-base',
    suites: LXD_SUITES,
    roles: ['lxd'],
    startedBy: 'lxd',
    why: "LXD's networks (a Recommends of lxd, so --no-install-recommends leaves it out)",
  },
  {
    program: 'busybox',
    package: 'busybox-static',
    suites: IMAGE_SUITES,
    roles: [],
    why: 'the root filesystem of the test images (must be the static build)',
    verify: staticExecutable,
  },
  { program: 'tar', package: 'tar', suites: IMAGE_SUITES, roles: [], why: 'packing the test images' },
  { program: 'chmod', package: 'coreutils', suites: ['plugin-docker', 'host-agent'], roles: [], why: 'test image files' },
  {
    program: 'cat',
    package: 'coreutils',
    suites: ['bench', 'dataplane', 'plugin-linux'],
    roles: ['agent'],
    why: "reading conntrack counters inside a namespace; the forward diagnosis's sysctls in the host namespace",
  },
  {
    program: 'conntrack',
    package: 'conntrack',
    suites: ['bench', 'dataplane', 'plugin-linux'],
    roles: ['agent'],
    why: "emptying the NAT benches' conntrack table before each load window; the forward diagnosis's unreplied connections (optional: without it that check is skipped)",
  },
  { program: 'iptables-nft', package: 'iptables', suites: ['plugin-linux'], roles: [], why: "the forward diagnosis test's Docker-style FORWARD policy drop" },
  { program: 'true', package: 'coreutils', suites: ['bench'], roles: [], why: 'timing `ip netns exec`' },
  { program: 'dd', package: 'coreutils', suites: ['bench'], roles: [], why: "the SSH bench's 200 MB test file" },
  { program: 'umount', package: 'mount', suites: DOCKER_SUITES, roles: [], why: "cleaning up dockerd's mounts" },
  { program: 'dpkg-query', package: 'dpkg', suites: IMAGE_SUITES, roles: [], why: 'telling the static busybox from the dynamic one' },
  { program: 'go', package: 'golang-go', suites: ['plugin-esxi', 'host-agent'], roles: [], why: 'building vcsim, the vSphere API simulator the ESXi plugin is tested against' },
  {
    program: 'vcsim',
    package: 'golang-github-vmware-govmomi-dev',
    suites: ['plugin-esxi', 'host-agent'],
    roles: [],
    why: "VMware's vSphere API simulator (govmomi's source, built by the tests from plugins/esxi/vcsim/main.go)",
    builtIn: 'plugins/esxi/src/testing.ts',
    source: GOVMOMI_SOURCE,
  },
  {
    program: 'sshd',
    package: 'openssh-server',
    suites: ['host-agent', 'bench'],
    roles: [],
    startedBy: 'unshare',
    why: "the instance's SSH server in the SSH jump-server tests (sshd -D in an instance namespace, its own UTS namespace)",
  },
  { program: 'ssh', package: 'openssh-client', suites: ['host-agent'], roles: ['controller'], why: 'the web terminal runs it under node-pty (ssh -J through the jump server); the real client of the SSH jump-server tests' },
  { program: 'scp', package: 'openssh-client', suites: ['host-agent'], roles: [], why: 'copying a file through the SSH jump server in its tests' },
  { program: 'ssh-keyscan', package: 'openssh-client', suites: ['host-agent'], roles: [], why: "reading the jump server's host key in its tests" },
  { program: 'unshare', package: 'util-linux', suites: ['host-agent'], roles: [], why: "giving the SSH tests' instance its own hostname (UTS namespace)" },
  { program: 'hostname', package: 'hostname', suites: ['host-agent'], roles: [], startedBy: 'nsenter', why: "setting the SSH tests' instance hostname" },
  { program: 'ssh-keygen', package: 'openssh-client', suites: ['host-agent', 'bench'], roles: [], why: 'test host and user keys of the SSH jump-server tests' },
  { program: 'apt-get', package: 'apt', suites: ['scripts'], roles: [], why: 'ensure-system installs the rest' },
  { program: 'psql', package: 'postgresql-client', suites: ['scripts', 'bench'], roles: [], why: 'ensure-system checks the PostgreSQL login; bench/forward-live drops its database on exit' },
  { program: 'pg_ctlcluster', package: 'postgresql-common', suites: ['scripts'], roles: [], why: "ensure-system starts the machine's PostgreSQL cluster" },
  { program: 'runuser', package: 'util-linux', suites: ['server', 'bench'], roles: [], why: 'running initdb and pg_ctl as the postgres user (initdb refuses root)' },
  {
    program: 'initdb',
    package: 'postgresql-15',
    suites: ['server', 'bench'],
    roles: [],
    why: "a private PostgreSQL cluster the restart tests and bench/outage.ts stop and start (never the machine's shared server)",
    at: '/usr/lib/postgresql/15/bin/initdb',
  },
  {
    program: 'pg_ctl',
    package: 'postgresql-15',
    suites: ['server', 'bench'],
    roles: [],
    why: 'starting, stopping and restarting that private cluster',
    at: '/usr/lib/postgresql/15/bin/pg_ctl',
  },
];

/** Services the tests connect to (not programs on PATH). */
export const SERVICES = [
  {
    name: 'PostgreSQL',
    package: 'postgresql',
    suites: ['server', 'cli', 'bench'],
    why: 'the PostgreSQL variant of every store test, the replica tests (DATABASE_URL, default 127.0.0.1:5432)',
  },
];

/** Where the tests find PostgreSQL: DATABASE_URL, default the machine's server on 127.0.0.1:5432. */
export function postgresAddress(env = process.env) {
  const url = new URL(env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres');
  return { host: url.hostname || '127.0.0.1', port: Number(url.port || 5432) };
}

/** Whether something accepts TCP connections at the PostgreSQL address (2 s limit). */
export function postgresReachable({ host, port } = postgresAddress()) {
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

/** Suites that need root (network namespaces, nftables, daemons). */
export const ROOT_SUITES = ['sdk', 'dataplane', 'host-agent', 'plugin-linux', 'plugin-docker', 'plugin-lxd', 'plugin-proxmox', 'plugin-esxi', 'server', 'cli', 'caddy-api-client', 'bench'];

/**
 * Directories searched for programs: GATEHOUSE_SYSTEM_PATH (colon-separated) when set — the
 * preflight's own test uses it — else PATH plus the sbin directories a non-root PATH may lack.
 */
export function searchPath(env = process.env) {
  if (env.GATEHOUSE_SYSTEM_PATH !== undefined) return env.GATEHOUSE_SYSTEM_PATH.split(':').filter(Boolean);
  return [...new Set([...(env.PATH ?? '').split(':').filter(Boolean), '/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'])];
}

/** The path of an executable `program` in `dirs`, or undefined. */
export function findProgram(program, dirs = searchPath()) {
  for (const dir of dirs) {
    const path = join(dir, program);
    try {
      const st = statSync(path);
      if (st.isFile() && (st.mode & 0o111) !== 0) return path;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

/**
 * Whether an ELF executable is statically linked (no PT_INTERP program header): the test images
 * copy busybox into an empty root filesystem, where a dynamic one finds no loader.
 */
export function staticExecutable(path) {
  const elf = readFileSync(path);
  if (elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2) return false; // not a 64-bit ELF
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) if (elf.readUInt32LE(phoff + i * phentsize) === 3) return false;
  return true;
}

/** Where a row's program is (for a program built from source: the source), or undefined when it is missing or fails the row's own check. */
export function locate(row, dirs = searchPath()) {
  if (row.source) return existsSync(row.source) ? row.source : undefined;
  if (row.at) return findProgram(row.program, [dirname(row.at)]);
  const path = findProgram(row.program, dirs);
  return path && (!row.verify || row.verify(path)) ? path : undefined;
}

/** Rows whose program is missing (or not the build we need), each with the suites that need it. */
export function missingPrograms(dirs = searchPath()) {
  return REQUIREMENTS.filter((row) => !locate(row, dirs));
}

/** The line the preflight prints for a missing program. */
export function missingLine(row, dirs = searchPath()) {
  const by = row.startedBy ? ` (${row.startedBy} runs it)` : '';
  const what = row.verify && findProgram(row.program, dirs) ? 'is not the build needed (a static executable)' : 'not found';
  return `${row.program} ${what}${by}: the ${row.suites.join(', ')} suite${row.suites.length > 1 ? 's need' : ' needs'} it; Debian package ${row.package}`;
}

/** The Markdown list an operator reads in a README: what to install for these roles. */
export function operatorSection(roles) {
  const rows = REQUIREMENTS.filter((row) => row.roles.some((role) => roles.includes(role)));
  const packages = [...new Set(rows.map((row) => row.package))];
  const lines = [
    `Install on the host (Debian packages; \`--no-install-recommends\` is fine, every needed package is named):`,
    '',
    '```sh',
    `apt-get install --no-install-recommends ${packages.join(' ')}`,
    '```',
    '',
    '| program | Debian package | what for |',
    '| --- | --- | --- |',
    ...rows.map((row) => `| \`${row.program}\` | ${row.package} | ${row.why}${row.startedBy ? ` (run by ${row.startedBy})` : ''} |`),
  ];
  return lines.join('\n');
}

/** READMEs with a generated operator section, and the roles each one lists. */
export const OPERATOR_READMES = [
  { file: 'agents/README.md', roles: ['agent'] },
  { file: 'plugins/README.md', roles: ['agent'] },
  { file: 'plugins/docker/README.md', roles: ['agent', 'docker'] },
  { file: 'plugins/lxd/README.md', roles: ['agent', 'lxd'] },
  { file: 'plugins/proxmox/README.md', roles: ['agent'] },
  { file: 'plugins/esxi/README.md', roles: ['agent'] },
];

const BEGIN =
  '<!-- system-requirements: generated from scripts/system-requirements.mjs; edit the table, then run `node scripts/system-requirements.mjs --write-readmes` -->';
const END = '<!-- /system-requirements -->';

/** A README's text with its generated section replaced (or undefined when it has no markers). */
export function withOperatorSection(text, roles) {
  const start = text.indexOf(BEGIN);
  const end = text.indexOf(END);
  if (start < 0 || end < start) return undefined;
  return `${text.slice(0, start)}${BEGIN}\n${operatorSection(roles)}\n${text.slice(end)}`;
}

/** The operator READMEs whose generated section differs from the table (paths relative to `root`). */
export function staleReadmes(root) {
  return OPERATOR_READMES.filter(({ file, roles }) => {
    const text = readFileSync(join(root, file), 'utf8');
    return withOperatorSection(text, roles) !== text;
  }).map(({ file }) => file);
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href && process.argv.includes('--write-readmes')) {
  const root = new URL('..', import.meta.url).pathname;
  for (const { file, roles } of OPERATOR_READMES) {
    const path = join(root, file);
    if (!existsSync(path)) throw new Error(`${file} does not exist`);
    const text = readFileSync(path, 'utf8');
    const next = withOperatorSection(text, roles);
    if (next === undefined) throw new Error(`${file} has no generated section: add the lines\n${BEGIN}\n${END}`);
    if (next !== text) {
      writeFileSync(path, next);
      console.log(`updated ${file}`);
    }
  }
}
