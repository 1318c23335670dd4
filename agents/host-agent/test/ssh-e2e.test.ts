/**
 * SSH through the controller, end to end, as root: a real controller process with its jump server,
 * a real host agent process inside a host namespace (the json-file plugin: the tunnel does not
 * depend on the backend), an instance namespace reached only from the host namespace and running
 * Debian's sshd with a test host key, and the real OpenSSH client (`ssh -J`, `scp`) in this
 * machine's namespace, which cannot route to the instance: every byte goes through the tunnel.
 */
import { NetnsLab, labAvailable, type LabNamespace } from '@gatehouse/sdk/testkit';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { jumpClientConfig, labAgentArgs, linkControllerToHost, runProgram, sshdArgs } from './ssh-lab.js';
import { gql, startController, until, type Proc } from './support.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await labAvailable();
const REPO = fileURLToPath(new URL('../../..', import.meta.url));
const ERR = '... on Error { code message field value }';
const ROOT_PASSWORD = 'instance-root-password';
/** The web terminals' idle timeout here: long enough for a password login on a loaded machine, short enough to wait for. */
const IDLE_MS = 20_000;

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** A WebSocket client of the controller's /terminal, as the web UI uses it. */
class TerminalClient {
  /** The terminal's output, decoded. */
  text = '';
  /** Control messages received. */
  readonly controls: Record<string, any>[] = [];
  /** Binary frames that were not whole UTF-8 on their own. */
  brokenFrames = 0;
  readonly closed: Promise<{ code: number; reason: string }>;
  private readonly decoder = new TextDecoder('utf-8', { fatal: true });

  constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary) return void this.controls.push(JSON.parse(data.toString('utf8')));
      try {
        this.text += this.decoder.decode(data);
      } catch {
        this.brokenFrames++;
        this.text += data.toString('utf8');
      }
    });
    this.closed = new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  }

  /** Connects to `/terminal` of the controller at `graphqlUrl` and sends `first` (the auth message) when given. */
  static async connect(graphqlUrl: string, first?: string | Record<string, unknown>): Promise<TerminalClient> {
    const ws = new WebSocket(graphqlUrl.replace(/^http/, 'ws').replace(/\/graphql$/, '/terminal'));
    const client = new TerminalClient(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    if (first !== undefined) ws.send(typeof first === 'string' ? first : JSON.stringify(first));
    return client;
  }

  type(text: string | Buffer): void {
    this.ws.send(typeof text === 'string' ? Buffer.from(text, 'utf8') : text);
  }

  control(message: Record<string, unknown>): void {
    this.ws.send(JSON.stringify(message));
  }

  /** Resolves with the match once the output after `from` matches `pattern`. */
  async waitFor(pattern: RegExp, from = 0, ms = 30_000): Promise<RegExpExecArray> {
    const found = await until(async () => pattern.exec(this.text.slice(from)) ?? undefined, ms, 20);
    if (!found) throw new Error(`no ${pattern} in the terminal output:\n${this.text.slice(-2000)}`);
    return found;
  }

  async waitForControl(type: string, ms = 30_000): Promise<Record<string, any>> {
    const found = await until(async () => this.controls.find((c) => c.type === type), ms, 20);
    if (!found) throw new Error(`no ${type} message; got ${JSON.stringify(this.controls)}; output:\n${this.text.slice(-2000)}`);
    return found;
  }
}

/** The pids of every process below `pid`, with their command names. */
function descendants(pid: number): { pid: number; comm: string }[] {
  const out: { pid: number; comm: string }[] = [];
  const walk = (p: number) => {
    let tasks: string[] = [];
    try {
      tasks = readdirSync(`/proc/${p}/task`);
    } catch {
      return;
    }
    for (const task of tasks) {
      let children: number[] = [];
      try {
        children = readFileSync(`/proc/${p}/task/${task}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
      } catch {
        continue;
      }
      for (const child of children) {
        let comm = '?';
        try {
          comm = readFileSync(`/proc/${child}/comm`, 'utf8').trim();
        } catch {
          // exited meanwhile
        }
        out.push({ pid: child, comm });
        walk(child);
      }
    }
  };
  walk(pid);
  return out;
}

describe.skipIf(!available && !REQUIRE_SYSTEM)('SSH through the controller (ssh -J, scp) to an instance behind its host agent', () => {
  const lab = new NetnsLab();
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-ssh-'));
  const rootIf = `${lab.prefix}r`;
  // the /30 between this machine and the host comes from the lab's random prefix: two runs on one machine do not share it
  const third = parseInt(lab.prefix.slice(2, 4), 16);
  const base = parseInt(lab.prefix.slice(4, 6), 16) & 0xfc;
  const controllerAddress = `100.73.${third}.${base + 1}`;
  const hostAddress = `100.73.${third}.${base + 2}`;
  const instanceHostname = `${lab.prefix}-vm1`;
  const recordingsDir = join(dir, 'recordings');
  let host: LabNamespace;
  let vm: LabNamespace;
  let controller: { proc: Proc; url: string };
  let admin: string;
  let sshPort: number;
  let jumpFingerprint: string;
  let hostId: string;
  let vmId: string;
  let vmAddress: string;
  let bobVmAddress: string;
  let alice: Awaited<ReturnType<typeof makeUser>>;
  let bob: Awaited<ReturnType<typeof makeUser>>;
  let agent: ChildProcess | undefined;
  let sshd: ChildProcess | undefined;
  let instanceHostKey: string;
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
      jumpClientConfig({
        controllerAddress,
        sshPort,
        key,
        knownHosts: { jump: join(dir, 'known_jump'), instances: join(dir, 'known_instances') },
        options: ['ConnectTimeout 20'],
      }),
    );
    return { userId, secret, keyId: added.addSshKey.sshKey.id as string, config };
  };

  /** Starts the instance's sshd with this host key (stopping the one running): own UTS and mount namespaces, root's test password. */
  const startSshd = async (hostKey: string) => {
    if (sshd && sshd.exitCode === null && sshd.signalCode === null) {
      const exited = new Promise((resolve) => sshd!.once('exit', resolve));
      sshd.kill('SIGKILL');
      await exited;
    }
    sshd = spawn(
      'ip',
      [
        'netns',
        'exec',
        vm.name,
        'unshare',
        '--uts',
        '--mount',
        '--propagation',
        'private',
        ...sshdArgs(hostKey, join(dir, 'authorized_keys'), ['PermitRootLogin yes', 'PasswordAuthentication yes']),
      ],
      { stdio: 'ignore' },
    );
    await until(async () => (await vm.exec('ss', ['-ltn'])).includes(':22 '), 10_000);
    await runProgram('nsenter', ['-t', String(sshd.pid), '-u', 'hostname', instanceHostname]);
    // the instance's own root files: its password, and empty shell start-up files (this machine's may wait on its tools' locks)
    writeFileSync(join(dir, 'empty-rc'), '');
    for (const [file, over] of [
      [join(dir, 'shadow'), '/etc/shadow'],
      [join(dir, 'empty-rc'), '/root/.bashrc'],
      [join(dir, 'empty-rc'), '/root/.profile'],
    ] as const) {
      const mounted = await runProgram('nsenter', ['-t', String(sshd.pid), '-m', 'mount', '--bind', file, over]);
      expect(mounted.code, mounted.stderr).toBe(0);
    }
  };

  const ssh = (config: string, destination: string, command: string[], extra: string[] = []) =>
    runProgram('ssh', ['-F', config, '-J', 'jump', ...extra, `root@${destination}`, '--', ...command]);

  beforeAll(async () => {
    host = await lab.namespace('host');
    vm = await lab.namespace('vm1');
    // this machine <-> host namespace: the only way from the controller to the host
    await linkControllerToHost(host, rootIf, `${lab.prefix}h`, controllerAddress, hostAddress);

    const c = await startController(join(dir, 'data'), {
      args: ['--host', controllerAddress, '--ssh-port', '0', '--terminal-idle-timeout-ms', String(IDLE_MS), '--terminal-recordings', recordingsDir],
    });
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
        `mutation($h: ID!, $o: ID!, $n: String!) { createInstance(input: { hostId: $h, ownerId: $o, name: $n, nics: [{ network: "br-ssh", allocate: [IPV4] }] }) { ... on CreateInstancePayload { instance { id nics { addresses { address } } } } ${ERR} } }`,
        { h: hostId, o: ownerId, n: name },
      );
      return { id: i.createInstance.instance.id as string, address: i.createInstance.instance.nics[0].addresses[0].address as string };
    };
    const vm1 = await instance('vm1', alice.userId);
    vmId = vm1.id;
    vmAddress = vm1.address;
    bobVmAddress = (await instance('bobvm', bob.userId)).address;
    await lab.link(host, '10.66.0.1/24', vm, `${vmAddress}/24`);

    // the instance's sshd: its own UTS namespace (so `hostname` answers for the instance), a test host key, alice's key for root
    const hostKey = join(dir, 'ssh_host_ed25519_key');
    await runProgram('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKey]);
    writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'alice.pub')));
    // the instance's key under each name the tests reach it by
    writeFileSync(join(dir, 'known_instances'), `vm1,vm1.lab,${vmAddress} ${readFileSync(`${hostKey}.pub`, 'utf8').split(' ').slice(0, 2).join(' ')}\n`);
    writeFileSync(join(dir, 'known_jump'), '');
    mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
    // root's password inside the instance only (the web terminal logs in with it): a shadow file bind-mounted in sshd's mount namespace
    const hash = (await runProgram('openssl', ['passwd', '-6', ROOT_PASSWORD])).stdout.trim();
    writeFileSync(join(dir, 'shadow'), `root:${hash}:19000:0:99999:7:::\n`, { mode: 0o600 });
    instanceHostKey = hostKey;
    await startSshd(hostKey);

    const t = await api(
      `mutation($h: ID!) { createApiToken(input: { name: "agent", scope: AGENT, hostId: $h }) { ... on CreateApiTokenPayload { created { secret } } ${ERR} } }`,
      { h: hostId },
    );
    agent = spawn('ip', labAgentArgs(host, REPO, controller.url, dir, ['--tunnel-ports', '22,2200']), {
      cwd: REPO,
      env: { ...process.env, GATEHOUSE_AGENT_TOKEN: t.createApiToken.created.secret },
      stdio: 'ignore',
    });
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

  /** A ticket of alice's for vm1 as `username`. */
  const ticketFor = async (username = 'root', secret = alice.secret, instanceId = vmId) => {
    const r = await api(
      `mutation($i: ID!, $u: String!) { openTerminal(input: { instanceId: $i, username: $u }) { __typename ... on OpenTerminalPayload { terminal { ticket } } ${ERR} } }`,
      { i: instanceId, u: username },
      secret,
    );
    return r.openTerminal;
  };

  /** Opens a terminal as root on vm1 and logs in with the password, up to the shell prompt. */
  const loggedInTerminal = async (cols = 80, rows = 24) => {
    const ticket = (await ticketFor()).terminal.ticket as string;
    const term = await TerminalClient.connect(controller.url, { type: 'auth', ticket, cols, rows });
    expect(await term.waitForControl('ready')).toMatchObject({ instance: { id: vmId, name: 'vm1', address: vmAddress }, username: 'root' });
    await term.waitFor(/root@vm1's password: $/);
    let mark = term.text.length;
    term.type(`${ROOT_PASSWORD}\r`);
    await term.waitFor(/# $/, mark);
    // a prompt of its own, so that what follows is read after it
    mark = term.text.length;
    // readline reads 8-bit input as characters whatever the instance's locale (in the C locale it
    // takes the first byte of a '€' for Meta-b, backward-word: seen in a fresh-clone run)
    term.type(`bind 'set enable-bracketed-paste off'; bind 'set convert-meta off'; bind 'set input-meta on'; bind 'set output-meta on'; PS1='gh$ '\r`);
    await term.waitFor(/gh\$ $/, mark);
    return { term, ticket };
  };

  const run = async (term: TerminalClient, command: string | Buffer[], pattern: RegExp) => {
    const from = term.text.length;
    if (typeof command === 'string') term.type(`${command}\r`);
    else for (const part of command) term.type(part);
    return term.waitFor(pattern, from);
  };

  const sshKeygenFingerprint = async (publicKeyFile: string) => (await runProgram('ssh-keygen', ['-l', '-f', publicKeyFile])).stdout.split(' ')[1];

  it('web terminal: logs in with a password through ssh -J, runs echo $((6*7)), resizes, keeps UTF-8 whole, and learns the host key', async () => {
    const hostKeysBefore = await api(`query($i: ID!) { instance(id: $i) { sshHostKeys { fingerprint } } }`, { i: vmId }, alice.secret);
    expect(hostKeysBefore.instance.sshHostKeys).toEqual([]);
    const { term, ticket } = await loggedInTerminal();
    try {
      expect((await run(term, 'echo $((6*7))', /\r\n(\d+)\r\n/))[1]).toBe('42');
      expect((await run(term, 'hostname', /\r\n(\S+)\r\n/))[1]).toBe(instanceHostname);
      expect((await run(term, 'stty size', /\r\n(\d+ \d+)\r\n/))[1]).toBe('24 80');
      term.control({ type: 'resize', cols: 132, rows: 43 });
      expect((await run(term, 'stty size', /\r\n(\d+ \d+)\r\n/))[1]).toBe('43 132');
      // a keystroke split inside a character, across two WebSocket messages; output of 3- and 4-byte characters in many chunks
      const euro = Buffer.from("printf '%s\\n' X€Y\r", 'utf8');
      const inside = euro.indexOf(0xe2) + 1;
      expect((await run(term, [euro.subarray(0, inside), euro.subarray(inside)], /\r\n(X.Y)\r\n/))[1]).toBe('X€Y');
      await run(term, "for i in $(seq 1 3000); do printf '€😀'; done; echo; echo done", /\r\ndone\r\n/);
      expect(term.text).toContain('€😀'.repeat(500));
      expect(term.brokenFrames).toBe(0);
      term.control({ type: 'ping' });
      await term.waitForControl('pong');
      // the instance's key, learned on first use, is the sshd's own
      const learned = await term.waitForControl('hostKeyLearned');
      const fingerprint = await sshKeygenFingerprint(`${instanceHostKey}.pub`);
      expect(learned.hostKeys).toEqual([{ algorithm: 'ssh-ed25519', fingerprint }]);
      const shown = await api(`query($i: ID!) { instance(id: $i) { sshHostKeys { algorithm fingerprint } } }`, { i: vmId }, alice.secret);
      expect(shown.instance.sshHostKeys).toEqual([{ algorithm: 'ssh-ed25519', fingerprint }]);
      term.type('exit\r');
      expect(await term.waitForControl('exit')).toMatchObject({ code: 0, message: 'the session ended' });
      expect((await term.closed).code).toBe(1000);
      // the session went through the jump server and is recorded as the web terminal's
      const sessions = await api(`{ me { sshSessions(last: 1) { keyFingerprint targetAddress } } }`, {}, alice.secret);
      expect(sessions.me.sshSessions).toEqual([{ keyFingerprint: 'web-terminal', targetAddress: vmAddress }]);
    } finally {
      term.ws.terminate();
    }
    // used once: the same ticket again is refused
    const again = await TerminalClient.connect(controller.url, { type: 'auth', ticket });
    expect(await again.closed).toEqual({ code: 4401, reason: 'TICKET_INVALID' });
    expect(again.controls[0]).toMatchObject({ type: 'error', code: 'TICKET_INVALID' });
  }, 120_000);

  it('web terminal: records a session in asciicast v2 once an admin switches recording on (nothing before), for its user and admins only', async () => {
    // the sessions above ran with recording off (the default): nothing was written
    expect(existsSync(recordingsDir) ? readdirSync(recordingsDir, { recursive: true }) : []).toEqual([]);
    const setRecording = `mutation($u: ID!, $e: Boolean!) { setTerminalRecording(input: { userId: $u, enabled: $e }) { __typename ${ERR} } }`;
    const refused = await api(setRecording, { u: alice.userId, e: true }, alice.secret);
    expect(refused.setTerminalRecording).toMatchObject({ __typename: 'ForbiddenError', code: 'FORBIDDEN' });
    expect((await api(setRecording, { u: alice.userId, e: true })).setTerminalRecording.__typename).toBe('SetTerminalRecordingPayload');
    const { term } = await loggedInTerminal();
    try {
      expect(term.controls.find((c) => c.type === 'ready')).toMatchObject({ recorded: true });
      expect((await run(term, 'echo recorded-$((6*7))', /\r\n(recorded-\d+)\r\n/))[1]).toBe('recorded-42');
      term.control({ type: 'resize', cols: 132, rows: 43 });
      expect((await run(term, 'stty size', /\r\n(\d+ \d+)\r\n/))[1]).toBe('43 132');
      term.type('exit\r');
      expect(await term.waitForControl('exit')).toMatchObject({ code: 0 });
    } finally {
      term.ws.terminate();
      await api(setRecording, { u: alice.userId, e: false });
    }
    const listed = await api(`{ me { terminalRecordings { id instanceId instanceName username width height bytes cast } } }`, {}, alice.secret);
    expect(listed.me.terminalRecordings).toHaveLength(1);
    const recording = listed.me.terminalRecordings[0];
    expect(recording).toMatchObject({ instanceId: vmId, instanceName: 'vm1', username: 'root', width: 80, height: 24 });
    const [header, ...events] = (recording.cast as string)
      .trimEnd()
      .split('\n')
      .map((line) => JSON.parse(line));
    expect(header).toMatchObject({ version: 2, width: 80, height: 24, timestamp: expect.any(Number) });
    for (const event of events) {
      expect(event).toEqual([expect.any(Number), expect.stringMatching(/^[or]$/), expect.any(String)]);
    }
    const output = events
      .filter((e) => e[1] === 'o')
      .map((e) => e[2] as string)
      .join('');
    expect(output).toContain('recorded-42');
    expect(output).toContain('43 132');
    expect(events.filter((e) => e[1] === 'r').map((e) => e[2])).toEqual(['132x43']);
    const times = events.map((e) => e[0] as number);
    expect(times).toEqual([...times].sort((a, b) => a - b));
    // the admin reads it; another user does not
    expect((await api(`query($i: ID!) { terminalRecording(id: $i) { cast } }`, { i: recording.id })).terminalRecording.cast).toBe(recording.cast);
    expect((await api(`query($i: ID!) { terminalRecording(id: $i) { cast } }`, { i: recording.id }, bob.secret)).terminalRecording).toBeNull();
    expect((await api(`{ me { terminalRecordings { id } } }`, {}, bob.secret)).me.terminalRecordings).toEqual([]);
  }, 120_000);

  it('web terminal: refuses a bad ticket, a bad first message, and silence, before running anything', async () => {
    const bad = await TerminalClient.connect(controller.url, { type: 'auth', ticket: `ght_${'x'.repeat(43)}` });
    expect(await bad.closed).toEqual({ code: 4401, reason: 'TICKET_INVALID' });
    expect(bad.controls[0]).toMatchObject({ type: 'error', message: expect.stringContaining('unknown, already used or expired') });
    for (const first of ['not json', JSON.stringify({ type: 'resize', cols: 1, rows: 1 }), JSON.stringify({ type: 'auth', ticket: 'a\u0000'.repeat(5000) })]) {
      const term = await TerminalClient.connect(controller.url, first);
      const closed = await term.closed;
      expect([4400, 4401]).toContain(closed.code);
    }
    // a ticket in a binary first message is not an authentication either
    const ticket = (await ticketFor()).terminal.ticket as string;
    const binary = await TerminalClient.connect(controller.url);
    binary.ws.send(Buffer.from(JSON.stringify({ type: 'auth', ticket })));
    expect((await binary.closed).code).toBe(4400);
    const silent = await TerminalClient.connect(controller.url);
    expect(await silent.closed).toEqual({ code: 4408, reason: 'AUTH_TIMEOUT' });
  }, 60_000);

  it('web terminal: bad input to openTerminal is refused naming the field (1 MB user name, NUL bytes, unknown or foreign instance)', async () => {
    for (const username of ['a'.repeat(1 << 20), 'ro\u0000ot', '-oProxyCommand=id']) {
      const r = await ticketFor(username);
      expect(r).toMatchObject({ __typename: 'ValidationError', code: 'VALIDATION_FAILED', field: 'input.username' });
    }
    expect(await ticketFor('root', alice.secret, '00000000-0000-4000-8000-000000000000')).toMatchObject({
      __typename: 'NotFoundError',
      field: 'input.instanceId',
    });
    expect(await ticketFor('root', bob.secret)).toMatchObject({ __typename: 'NotFoundError', field: 'input.instanceId' });
  });

  it("web terminal: refuses an instance whose host key changed, with ssh's warning, and keeps the learned key", async () => {
    const learned = await sshKeygenFingerprint(`${instanceHostKey}.pub`);
    const otherKey = join(dir, 'ssh_host_ed25519_key_reinstalled');
    await runProgram('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', otherKey]);
    await startSshd(otherKey);
    try {
      const ticket = (await ticketFor()).terminal.ticket as string;
      const term = await TerminalClient.connect(controller.url, { type: 'auth', ticket });
      await term.waitFor(/REMOTE HOST IDENTIFICATION HAS CHANGED/);
      expect(await term.waitForControl('exit')).toMatchObject({ code: 255 });
      expect(term.text).toContain('Host key verification failed');
      expect(term.text).not.toContain('password:');
      const shown = await api(`query($i: ID!) { instance(id: $i) { sshHostKeys { fingerprint } } }`, { i: vmId }, alice.secret);
      expect(shown.instance.sshHostKeys).toEqual([{ fingerprint: learned }]);
    } finally {
      await startSshd(instanceHostKey);
    }
  }, 60_000);

  it(
    `web terminal: closes a terminal without input for the idle timeout (${IDLE_MS / 1000} s here), saying so, and ends its ssh`,
    async () => {
      const sshChildren = () => descendants(controller.proc.child.pid!).filter((p) => p.comm === 'ssh');
      const { term } = await loggedInTerminal();
      try {
        expect(sshChildren().length).toBeGreaterThan(0);
        // no keystroke from here on
        const idle = await term.waitForControl('error', IDLE_MS + 30_000);
        expect(idle).toEqual({ type: 'error', code: 'IDLE', message: `no input for ${IDLE_MS / 1000} s: the terminal was closed` });
        expect(await term.waitForControl('exit')).toMatchObject({ type: 'exit' });
        expect((await term.closed).code).toBe(1000);
        const left = await until(async () => (sshChildren().length === 0 ? [] : undefined), 10_000);
        expect(left ?? sshChildren()).toEqual([]);
      } finally {
        term.ws.terminate();
      }
    },
    IDLE_MS + 120_000,
  );

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

  it('web terminal: says the instance cannot be reached while its host agent is away', async () => {
    const refusal = await until(
      async () => {
        const ticket = (await ticketFor()).terminal.ticket as string;
        const term = await TerminalClient.connect(controller.url, { type: 'auth', ticket });
        const closed = await term.closed;
        return closed.code === 4503 ? term.controls[0] : undefined;
      },
      30_000,
      500,
    );
    expect(refusal).toEqual({ type: 'error', code: 'UNREACHABLE', message: 'instance vm1 cannot be reached: the agent of host lab is not connected' });
  }, 60_000);

  it('leaves no ssh process of a web terminal behind', async () => {
    const sshChildren = () => descendants(controller.proc.child.pid!).filter((p) => p.comm === 'ssh');
    const left = await until(async () => (sshChildren().length === 0 ? [] : undefined), 10_000);
    expect(left ?? sshChildren()).toEqual([]);
  });

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
