/**
 * SSH through the controller, end to end, as root: a real controller process with its jump server,
 * a real host agent process inside a host namespace (the json-file plugin: the tunnel does not
 * depend on the backend), an instance namespace reached only from the host namespace and running
 * Debian's sshd with a test host key, and the real OpenSSH client (`ssh -J`, `scp`) in this
 * machine's namespace, which cannot route to the instance: every byte goes through the tunnel.
 */
import { NetnsLab, labAvailable, type LabNamespace } from '@gatehouse/sdk/testkit';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gql, startController, until, type Proc } from './support.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await labAvailable();
const REPO = fileURLToPath(new URL('../../..', import.meta.url));
const PLUGIN = join(REPO, 'core/sdk/examples/json-file-plugin.ts');
const ERR = '... on Error { code message field value }';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program (argument array) and resolves with its exit code and output, whatever the code. */
function runProgram(command: string, args: string[], timeoutMs = 60_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(command, args, { timeout: timeoutMs, maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      const code = error ? (typeof (error as { code?: unknown }).code === 'number' ? (error as { code: number }).code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

describe.skipIf(!available && !REQUIRE_SYSTEM)('SSH through the controller (ssh -J, scp) to an instance behind its host agent', () => {
  const lab = new NetnsLab();
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-ssh-'));
  const rootIf = `${lab.prefix}r`;
  const controllerAddress = '100.73.0.1';
  const instanceHostname = `${lab.prefix}-vm1`;
  let host: LabNamespace;
  let vm: LabNamespace;
  let controller: { proc: Proc; url: string };
  let admin: string;
  let sshPort: number;
  let jumpFingerprint: string;
  let hostId: string;
  let vmAddress: string;
  let bobVmAddress: string;
  let alice: Awaited<ReturnType<typeof makeUser>>;
  let bob: Awaited<ReturnType<typeof makeUser>>;
  let agent: ChildProcess | undefined;
  let sshd: ChildProcess | undefined;
  const api = <T = any>(query: string, variables?: Record<string, unknown>, secret = admin) => gql<T>(controller.url, secret, query, variables);

  /** A user with a USER token and an ed25519 key (added with addSshKey), and an ssh config using it. */
  const makeUser = async (name: string) => {
    const u = await api(`mutation($n: String!) { createUser(input: { name: $n }) { ... on CreateUserPayload { user { id } } ${ERR} } }`, { n: name });
    const userId = u.createUser.user.id as string;
    const t = await api(
      `mutation($u: ID!) { createApiToken(input: { userId: $u, name: "t", scope: USER }) { ... on CreateApiTokenPayload { created { secret } } ${ERR} } }`,
      { u: userId },
    );
    const secret = t.createApiToken.created.secret as string;
    const key = join(dir, name);
    await runProgram('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `${name}@test`, '-f', key]);
    const added = await api(
      `mutation($k: String!) { addSshKey(input: { publicKey: $k }) { ... on AddSshKeyPayload { sshKey { id fingerprint } } ${ERR} } }`,
      { k: readFileSync(`${key}.pub`, 'utf8') },
      secret,
    );
    expect(added.addSshKey.sshKey.fingerprint).toMatch(/^SHA256:/);
    // the jump server as "jump"; every host checked against known_hosts files of this test
    const config = join(dir, `${name}.config`);
    writeFileSync(
      config,
      [
        'Host jump',
        `  HostName ${controllerAddress}`,
        `  Port ${sshPort}`,
        '  User gatehouse',
        `  UserKnownHostsFile ${join(dir, 'known_jump')}`,
        'Host *',
        `  IdentityFile ${key}`,
        '  IdentitiesOnly yes',
        '  IdentityAgent none',
        '  BatchMode yes',
        '  StrictHostKeyChecking yes',
        `  UserKnownHostsFile ${join(dir, 'known_instances')}`,
        '  ConnectTimeout 20',
        '',
      ].join('\n'),
    );
    return { userId, secret, keyId: added.addSshKey.sshKey.id as string, config };
  };

  const ssh = (config: string, destination: string, command: string[], extra: string[] = []) =>
    runProgram('ssh', ['-F', config, '-J', 'jump', ...extra, `root@${destination}`, '--', ...command]);

  beforeAll(async () => {
    host = await lab.namespace('host');
    vm = await lab.namespace('vm1');
    // this machine <-> host namespace: the only way from the controller to the host
    await runProgram('ip', ['link', 'add', rootIf, 'type', 'veth', 'peer', 'name', `${lab.prefix}h`, 'netns', host.name]);
    await runProgram('ip', ['addr', 'add', `${controllerAddress}/30`, 'dev', rootIf]);
    await runProgram('ip', ['link', 'set', rootIf, 'up']);
    await host.exec('ip', ['addr', 'add', '100.73.0.2/30', 'dev', `${lab.prefix}h`]);
    await host.exec('ip', ['link', 'set', `${lab.prefix}h`, 'up']);

    const c = await startController(join(dir, 'data'), { args: ['--host', controllerAddress, '--ssh-port', '0'] });
    controller = c;
    admin = c.bootstrapSecret!;
    const [, port, fingerprint] = await c.proc.waitFor(/SSH jump server listening on \S+:(\d+), host key (SHA256:\S+)/);
    sshPort = Number(port);
    jumpFingerprint = fingerprint!;

    await api(
      `mutation { createIpPool(input: { name: "ssh", kind: PRIVATE, network: "br-ssh", cidr: "10.66.0.0/24", gateway: "10.66.0.1" }) { __typename ${ERR} } }`,
    );
    const h = await api(`mutation { createHost(input: { name: "lab", backend: "json-file" }) { ... on CreateHostPayload { host { id } } ${ERR} } }`);
    hostId = h.createHost.host.id;
    alice = await makeUser('alice');
    bob = await makeUser('bob');
    const instance = async (name: string, ownerId: string) => {
      const i = await api(
        `mutation($h: ID!, $o: ID!, $n: String!) { createInstance(input: { hostId: $h, ownerId: $o, name: $n, nics: [{ network: "br-ssh", allocate: [IPV4] }] }) { ... on CreateInstancePayload { instance { nics { addresses { address } } } } ${ERR} } }`,
        { h: hostId, o: ownerId, n: name },
      );
      return i.createInstance.instance.nics[0].addresses[0].address as string;
    };
    vmAddress = await instance('vm1', alice.userId);
    bobVmAddress = await instance('bobvm', bob.userId);
    await lab.link(host, '10.66.0.1/24', vm, `${vmAddress}/24`);

    // the instance's sshd: its own UTS namespace (so `hostname` answers for the instance), a test host key, alice's key for root
    const hostKey = join(dir, 'ssh_host_ed25519_key');
    await runProgram('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKey]);
    writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'alice.pub')));
    // the instance's key under each name the tests reach it by
    writeFileSync(join(dir, 'known_instances'), `vm1,vm1.lab,${vmAddress} ${readFileSync(`${hostKey}.pub`, 'utf8').split(' ').slice(0, 2).join(' ')}\n`);
    writeFileSync(join(dir, 'known_jump'), '');
    mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
    sshd = spawn(
      'ip',
      [
        'netns',
        'exec',
        vm.name,
        'unshare',
        '--uts',
        '/usr/sbin/sshd',
        '-D',
        '-e',
        '-f',
        '/dev/null',
        '-p',
        '22',
        '-h',
        hostKey,
        '-o',
        `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
        '-o',
        'PidFile none',
        '-o',
        'StrictModes no',
        '-o',
        'UsePAM no',
        '-o',
        'PermitRootLogin prohibit-password',
        '-o',
        'Subsystem sftp internal-sftp',
      ],
      { stdio: 'ignore' },
    );
    await until(async () => (await vm.exec('ss', ['-ltn'])).includes(':22 '), 10_000);
    await runProgram('nsenter', ['-t', String(sshd.pid), '-u', 'hostname', instanceHostname]);

    const t = await api(
      `mutation($h: ID!) { createApiToken(input: { name: "agent", scope: AGENT, hostId: $h }) { ... on CreateApiTokenPayload { created { secret } } ${ERR} } }`,
      { h: hostId },
    );
    agent = spawn(
      'ip',
      [
        'netns',
        'exec',
        host.name,
        process.execPath,
        '--import',
        'tsx',
        'agents/host-agent/src/cli.ts',
        '--controller',
        controller.url,
        '--plugin',
        PLUGIN,
        '--plugin-config',
        JSON.stringify({ path: join(dir, 'forwards.json') }),
        '--tunnel-ports',
        '22,2200',
      ],
      { cwd: REPO, env: { ...process.env, GATEHOUSE_AGENT_TOKEN: t.createApiToken.created.secret }, stdio: 'ignore' },
    );
    const applied = await until(async () => {
      const s = await api(`query($h: ID!) { host(id: $h) { desiredRevision agent { online appliedRevision } } }`, { h: hostId });
      return s.host.agent.online && s.host.agent.appliedRevision === s.host.desiredRevision;
    }, 60_000);
    expect(applied).toBe(true);
    // the jump server's host key, as an operator would pin it after comparing the printed fingerprint
    const keyscan = await runProgram('ssh-keyscan', ['-p', String(sshPort), '-t', 'ed25519', controllerAddress]);
    writeFileSync(join(dir, 'known_jump'), keyscan.stdout);
    const listed = await runProgram('ssh-keygen', ['-l', '-f', join(dir, 'known_jump')]);
    expect(listed.stdout).toContain(jumpFingerprint);
  }, 180_000);

  afterAll(async () => {
    for (const child of [agent, sshd]) if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await controller?.proc.stop();
    await runProgram('ip', ['link', 'del', rootIf]);
    await lab.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs hostname in the instance through the jump server, by name, name.host and address', async () => {
    for (const destination of ['vm1', 'vm1.lab', vmAddress]) {
      const r = await ssh(alice.config, destination, ['hostname']);
      expect({ destination, code: r.code, stdout: r.stdout.trim() }).toEqual({ destination, code: 0, stdout: instanceHostname });
    }
    // this machine itself has no route to the instance
    expect((await runProgram('ip', ['route', 'get', vmAddress])).stdout).not.toContain(rootIf);
  });

  it('copies a 20 MB file with scp intact, and records the session with its bytes', async () => {
    const data = randomBytes(20 * 1024 * 1024);
    writeFileSync(join(dir, 'up.bin'), data);
    const up = await runProgram(
      'scp',
      ['-F', join(dir, 'alice.config'), '-J', 'jump', '-q', join(dir, 'up.bin'), `root@vm1:${join(dir, 'copied.bin')}`],
      120_000,
    );
    expect(up.code, up.stderr).toBe(0);
    // the instance's namespace shares this file system: what sshd wrote is there
    expect(sha256(readFileSync(join(dir, 'copied.bin')))).toBe(sha256(data));
    const down = await runProgram(
      'scp',
      ['-F', join(dir, 'alice.config'), '-J', 'jump', '-q', `root@${vmAddress}:${join(dir, 'copied.bin')}`, join(dir, 'down.bin')],
      120_000,
    );
    expect(down.code, down.stderr).toBe(0);
    expect(sha256(readFileSync(join(dir, 'down.bin')))).toBe(sha256(data));
    const sessions = await until(async () => {
      const me = await api(`{ me { sshSessions { keyFingerprint targetAddress targetPort endedAt bytesToInstance bytesFromInstance } } }`, {}, alice.secret);
      const list = me.me.sshSessions as { endedAt: string | null; bytesToInstance: number; bytesFromInstance: number; targetAddress: string }[];
      return list.length >= 2 && list.slice(0, 2).every((s) => s.endedAt) ? list : undefined;
    });
    const [download, upload] = sessions!;
    expect(upload!.targetAddress).toBe(vmAddress);
    expect(upload!.bytesToInstance).toBeGreaterThan(20 * 1024 * 1024);
    expect(download!.bytesFromInstance).toBeGreaterThan(20 * 1024 * 1024);
  }, 300_000);

  it("refuses a user's key for another user's instance, by name and by address", async () => {
    for (const destination of ['vm1', vmAddress]) {
      const r = await ssh(bob.config, destination, ['hostname']);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain(`${destination} is not one of your instances`);
    }
    // alice cannot reach bob's instance either, by its address
    const r = await ssh(alice.config, bobVmAddress, ['hostname']);
    expect(r.stderr).toContain(`${bobVmAddress} is not one of your instances`);
  });

  it('refuses a port the host does not allow', async () => {
    const r = await ssh(alice.config, 'vm1', ['hostname'], ['-p', '2201']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('port 2201 of vm1.lab is not open to SSH through the controller (allowed: 22, 2200)');
  });

  it('opens no shell and runs no command on the jump server itself', async () => {
    const exec = await runProgram('ssh', ['-F', join(dir, 'alice.config'), 'jump', '--', 'id']);
    expect(exec.code).toBe(1);
    expect(exec.stderr).toContain('it opens no shell and runs no command');
    const shell = await runProgram('ssh', ['-F', join(dir, 'alice.config'), '-tt', 'jump']);
    expect(shell.code).toBe(1);
    expect(shell.stdout + shell.stderr).toContain('it opens no shell and runs no command');
  });

  it('ends open sessions when the host agent is killed', async () => {
    const session = spawn('ssh', ['-F', alice.config, '-J', 'jump', 'root@vm1', '--', 'echo', 'up;', 'sleep', '120'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    session.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => session.once('exit', (code) => resolve(code)));
    try {
      expect(await until(async () => out.includes('up'), 30_000)).toBe(true);
      agent!.kill('SIGKILL');
      const code = await Promise.race([exited, new Promise<'still running'>((r) => setTimeout(() => r('still running'), 15_000))]);
      expect(code).toBe(255);
    } finally {
      session.kill('SIGKILL');
    }
  }, 60_000);

  it('refuses a key once it is removed', async () => {
    const removed = await api(`mutation($k: ID!) { removeSshKey(input: { keyId: $k }) { __typename ${ERR} } }`, { k: alice.keyId }, alice.secret);
    expect(removed.removeSshKey.__typename).toBe('RemoveSshKeyPayload');
    const r = await ssh(alice.config, 'vm1', ['hostname']);
    expect(r.code).toBe(255);
    expect(r.stderr).toContain('Permission denied (publickey)');
    const keys = await api(`{ me { sshKeys { id } } }`, {}, alice.secret);
    expect(keys.me.sshKeys).toEqual([]);
  });
});
