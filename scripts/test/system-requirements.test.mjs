// program-scan: ignore-file (the snippets below are the scanner's fixtures, not programs we start)
// Keeps the requirements table true: every program the source starts is in it (with the suites
// that start it), every row is still used, the README sections are generated from it, and the
// preflight fails first, naming the program, when one is missing.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { launcherNames, programsIn, scanPrograms } from '../program-scan.mjs';
import { REQUIREMENTS, SUITES, findProgram, locate, missingLine, searchPath, staleReadmes, staticExecutable } from '../system-requirements.mjs';

const root = new URL('../..', import.meta.url).pathname;
const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const rowOf = new Map(REQUIREMENTS.map((row) => [row.program, row]));

describe('the source scan', () => {
  it('finds wrappers of execFile/spawn by their signature', () => {
    const text = [
      'export function run(command: string, args: readonly string[]) {}',
      'function execFileText(cmd: string, args: readonly string[]) {}',
      'const quiet = (command: string, args: string[]) => {};',
      'function run(cmd, args) {}',
      'const target: ExecTargetRun = (command, args, options) => x;',
    ].join('\n');
    expect([...launcherNames(text)].sort()).toEqual(['ExecTargetRun', 'execFileText', 'quiet', 'run', 'target']);
  });

  it('finds the programs of direct calls, wrappers, ip netns exec, nsenter, *_BIN defaults and constants', () => {
    const text = `
      execFile('nft', ['-j', 'list', 'ruleset']);
      spawn(
        'nsenter',
        [\`--net=/run/netns/\${ns}\`, 'dockerd', '--host', sock]);
      await run('ip', ['netns', 'exec', ns.name, 'iperf3', '-s']);
      ns.exec('ss', ['-Hltn']);
      execFileText('/bin/busybox', ['--list-full']);
      export const CADDY_BIN = process.env.GATEHOUSE_CADDY_BIN ?? 'caddy';
      const OPENSSL_BIN = 'openssl';
      execFile(OPENSSL_BIN, args);
      spawn(process.execPath, ['x.js']);
      createInstance('conf-a', []);
      run('npx', ['turbo']);
    `;
    const launchers = new Set(['execFile', 'spawn', 'run', 'exec', 'execFileText']);
    expect([...programsIn(text, launchers)].sort()).toEqual(['busybox', 'caddy', 'dockerd', 'ip', 'iperf3', 'nft', 'nsenter', 'openssl', 'ss']);
  });
});

describe('the requirements table', () => {
  const { programs } = scanPrograms(root);

  it('lists every program the code and the tests start', () => {
    const unlisted = [...programs.keys()]
      .filter((program) => !rowOf.has(program))
      .map((program) => `${program} (started in ${[...programs.get(program).values()].flat().join(', ')})`);
    expect(unlisted, 'add these programs, their Debian package and their suites to scripts/system-requirements.mjs').toEqual([]);
  });

  it("names every suite that starts a program among the program's suites", () => {
    const wrong = [];
    for (const [program, suites] of programs) {
      const row = rowOf.get(program);
      if (!row) continue;
      for (const [suite, files] of suites) if (!row.suites.includes(suite)) wrong.push(`${program}: ${suite} (${files.join(', ')})`);
    }
    expect(wrong).toEqual([]);
  });

  it('has no row that nothing uses any more', () => {
    const unused = REQUIREMENTS.filter((row) => {
      if (programs.has(row.program) || row.startedBy) return false;
      // names built at run time (iptables-${flavour}) are checked against the file that builds them
      return !(row.builtIn && readFileSync(join(root, row.builtIn), 'utf8').includes(row.program));
    }).map((row) => row.program);
    expect(unused).toEqual([]);
  });

  it('uses known suite names and one package per program', () => {
    for (const row of REQUIREMENTS) {
      expect(row.package, row.program).toMatch(/^[a-z0-9][a-z0-9+.-]+$/);
      for (const suite of row.suites) expect(SUITES, `${row.program}: ${suite}`).toContain(suite);
    }
    expect(new Set(REQUIREMENTS.map((row) => row.program)).size).toBe(REQUIREMENTS.length);
  });

  it("matches the operator sections of the agent's and the plugins' READMEs", () => {
    expect(staleReadmes(root), 'run: node scripts/system-requirements.mjs --write-readmes').toEqual([]);
  });

  it('tells a static executable from a dynamic one', () => {
    expect(staticExecutable(process.execPath)).toBe(false);
    const busybox = findProgram('busybox');
    if (busybox || REQUIRE_SYSTEM) expect(staticExecutable(busybox)).toBe(true); // busybox-static, installed by ensure-system
  });
});

describe('the preflight', () => {
  // A directory holding every program of the table that this machine has, except iperf3.
  const farm = mkdtempSync(join(tmpdir(), 'gh-preflight-'));
  // programs built from a package's source (vcsim) are found by their source, not on PATH
  const present = REQUIREMENTS.filter((row) => row.program !== 'iperf3' && !row.at && findProgram(row.program));
  for (const row of present) symlinkSync(findProgram(row.program), join(farm, row.program));
  const everythingElse = present.length + REQUIREMENTS.filter((row) => (row.source || row.at) && locate(row)).length === REQUIREMENTS.length - 1;
  afterAll(() => rmSync(farm, { recursive: true, force: true }));

  const preflight = (env) =>
    spawnSync(process.execPath, [join(root, 'scripts/preflight.mjs')], { encoding: 'utf8', env: { ...process.env, GATEHOUSE_SYSTEM_PATH: farm, ...env } });
  const iperfLine = missingLine(rowOf.get('iperf3'), [farm]);

  it('in CI, fails naming the missing program, its suites and its package', () => {
    const r = preflight({ GATEHOUSE_REQUIRE_SYSTEM: '1' });
    expect(iperfLine).toBe('iperf3 not found: the sdk, dataplane, host-agent, plugin-linux, plugin-docker, plugin-lxd, plugin-proxmox, plugin-esxi, cli suites need it; Debian package iperf3');
    expect(r.stderr).toContain(`[preflight] ${iperfLine}`);
    expect(r.stdout).toMatch(/iperf3 +iperf3 +MISSING/);
    expect(r.status).toBe(1);
    if (everythingElse || REQUIRE_SYSTEM) expect(r.stderr.match(/not found/g)).toHaveLength(1);
  });

  it('outside CI, passes and names the suites that will skip', () => {
    const r = preflight({ GATEHOUSE_REQUIRE_SYSTEM: '' });
    expect(r.status).toBe(0);
    expect(r.stderr).toContain(iperfLine);
    expect(r.stderr).toMatch(/these suites will skip the tests that need what is missing .*\bdataplane\b/);
  });

  it('passes when every program is there', (t) => {
    if (!everythingElse && !REQUIRE_SYSTEM) return t.skip();
    symlinkSync(findProgram('iperf3'), join(farm, 'iperf3'));
    try {
      const r = preflight({ GATEHOUSE_REQUIRE_SYSTEM: '1' });
      expect(r.stderr).toBe('');
      expect(r.stdout).toContain(`[preflight] all ${REQUIREMENTS.length} programs`);
      expect(r.status).toBe(0);
    } finally {
      rmSync(join(farm, 'iperf3'));
    }
  });

  it('stops `npm test` before any suite, with the closing line', () => {
    // ensure-system is told to install nothing, so the only effect is the preflight's verdict
    const r = spawnSync(process.execPath, [join(root, 'scripts/test.mjs')], {
      encoding: 'utf8',
      env: {
        ...process.env,
        GATEHOUSE_SYSTEM_PATH: farm,
        GATEHOUSE_SYSTEM_NO_INSTALL: REQUIREMENTS.map((row) => row.program).join(','),
        GATEHOUSE_REQUIRE_SYSTEM: '1',
      },
    });
    expect(r.stderr).toContain(iperfLine);
    expect(r.stderr).toContain('preflight failed: no test suite was started');
    expect(r.stdout.trim().split('\n').at(-1)).toBe('0 passed, 1 failed');
    expect(r.stdout).not.toMatch(/turbo|vitest/i);
    expect(r.status).toBe(1);
  });
});

it('searches PATH plus the sbin directories unless GATEHOUSE_SYSTEM_PATH is set', () => {
  expect(searchPath({ PATH: '/a:/b' })).toEqual(['/a', '/b', '/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']);
  expect(searchPath({ PATH: '/a', GATEHOUSE_SYSTEM_PATH: '/x:/y' })).toEqual(['/x', '/y']);
});
