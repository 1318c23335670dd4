/**
 * SSH through the controller against direct SSH, in the same run, to the same sshd:
 *
 *   root ns: bench, controller (jump server) 100.74.0.1 ── veth ── 100.74.0.2 host ns: host agent ── 10.68.0.1 │ 10.68.0.x vm ns: sshd
 *
 *  - through: `ssh -J` from the root namespace: client → jump server (controller) → tunnel
 *    WebSocket → host agent → sshd. Every byte crosses the controller and the agent.
 *  - direct: the same client program inside the host namespace, straight to the sshd (the hop the
 *    agent makes itself), so the difference is what the jump server and the tunnel add.
 *
 * Measured, alternating direct and through in rounds:
 *  1. Keystroke echo: one byte written to `ssh -tt` whose remote end is `cat` on a raw pty, timed
 *     until it comes back; BENCH_SSH_KEYS per round after a warm-up; p50 and p99 of each path and
 *     what the controller path adds.
 *  2. Bulk: `scp` of a BENCH_SSH_MB MB file to the instance's /dev/null, MB/s of each path and
 *     their ratio.
 * Targets (issue 15): added echo < 2 ms at p99; throughput through ≥ 0.7 × direct.
 *
 *   npx tsx bench/ssh.ts     (as root; ssh, scp, sshd, ssh-keygen; npm run build first)
 *     BENCH_SSH_KEYS=1000 BENCH_SSH_ROUNDS=3 BENCH_SSH_MB=200 BENCH_SSH_JUMP_CIPHER=aes128-gcm@openssh.com (default: the client's choice)
 *     BENCH_SSH_OPENSSH_JUMP=on: also measure `ssh -J` through OpenSSH's sshd in the host namespace (a reference: the same jump with a relay written in C)
 *     BENCH_SSH_QUEUES=on: sample where the bytes wait (TCP queues of each hop) during the copies
 *     BENCH_SSH_CPU_PROF=<dir>: the controller and the agent run with `node --cpu-prof` and write their
 *     profiles (.cpuprofile, for Chrome's DevTools or `bench/cpuprofile-top.ts`) there when they stop
 *     BENCH_SSH_NODE_ARGS="--trace-gc …": node options for the controller and the agent
 *     BENCH_SSH_OUTPUT=<dir>: the controller's and the agent's output are written there at the end
 *
 * Whatever ends the bench (an error, an uncaught one, Ctrl-C), it kills what it started (the
 * controller, and every process in its namespaces: the agent, sshd and its sessions) and deletes
 * its veth, namespaces and temporary directory.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NetnsLab, labAvailable } from '@gatehouse/sdk/testkit';
import { jumpClientConfig, labAgentArgs, linkControllerToHost, runProgram, sshdArgs } from '../agents/host-agent/test/ssh-lab.js';

const KEYS = Number(process.env.BENCH_SSH_KEYS ?? 1000);
const ROUNDS = Number(process.env.BENCH_SSH_ROUNDS ?? 3);
const MB = Number(process.env.BENCH_SSH_MB ?? 200);
const WARMUP_KEYS = 50;
/** A cipher for the client's connection to the jump server (a diagnostic: which one the jump server decrypts fastest). */
const JUMP_CIPHER = process.env.BENCH_SSH_JUMP_CIPHER;
/**
 * Sample the TCP queues of each hop during the copies (`ss` 20 times a second in three namespaces).
 * Off by default: the sampling takes about a fifth of this 2-core machine's CPU while it runs, which
 * the CPU-bound through path then lacks (it lowered the measured ratio).
 */
const QUEUES = process.env.BENCH_SSH_QUEUES === 'on';
/**
 * A third path for reference: `ssh -J` through OpenSSH's own sshd as the jump host, in the host
 * namespace (client → sshd (C) → instance's sshd), with the same client options. What any jump
 * path costs on this machine with a relay much cheaper than ours: the client's second encryption,
 * its `-W` process, one decryption and one more TCP hop.
 */
const OPENSSH_JUMP = process.env.BENCH_SSH_OPENSSH_JUMP === 'on';
/** Where the controller and the agent write their CPU profiles; absent: not profiled. */
const CPU_PROF = process.env.BENCH_SSH_CPU_PROF;
/** Node options for the controller and the agent (a diagnostic, e.g. `--trace-gc`), space-separated. */
const NODE_ARGS = (process.env.BENCH_SSH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
for (const arg of NODE_ARGS) if (!arg.startsWith('--')) throw new Error(`BENCH_SSH_NODE_ARGS: ${JSON.stringify(arg)} is not a node option (--name[=value])`);
/** One directory per process: the agent runs under tsx, whose loader thread writes a profile of its own. */
const nodeArgs = (name: string): string[] => [...NODE_ARGS, ...(CPU_PROF ? ['--cpu-prof', '--cpu-prof-dir', join(CPU_PROF, name)] : [])];
/** The monotonic clock in µs, the one CPU profiles' timestamps use, for the windows of the through copies. */
const monotonicMicros = () => Number(process.hrtime.bigint() / 1000n);

const REPO = fileURLToPath(new URL('..', import.meta.url));
const CONTROLLER_ADDRESS = '100.74.0.1';
const HOST_ADDRESS = '100.74.0.2';
const GATEWAY = '10.68.0.1';
const ERR = '... on Error { code message }';

async function must(command: string, args: string[]): Promise<string> {
  const r = await runProgram(command, args, 600_000);
  if (r.code !== 0) throw new Error(`${command} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

function started(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): { child: ChildProcess; output: () => string; waitFor: (re: RegExp) => Promise<RegExpExecArray> } {
  // its own process group: `ip netns exec` runs the program as its child, and both go with the group
  const child = spawn(command, args, { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const waitFor = async (re: RegExp) => {
    const end = Date.now() + 60_000;
    for (;;) {
      const m = re.exec(out);
      if (m) return m;
      if (Date.now() > end || child.exitCode !== null) throw new Error(`no ${re}; output:\n${out.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  return { child, output: () => out, waitFor };
}

/**
 * CPU seconds (user + system, or only system: the kernel's work for the process, e.g. its socket
 * reads and writes) a process has used, from /proc; `waited`: those of its children it has waited for.
 */
function cpuSeconds(pid: number | undefined | 'self', waited = false, only?: 'system'): number {
  if (!pid) return 0;
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    const [user, system] = waited ? [fields[13], fields[14]] : [fields[11], fields[12]];
    return ((only === 'system' ? 0 : Number(user)) + Number(system)) / 100;
  } catch {
    return 0;
  }
}

/**
 * Where the bytes of a bulk copy wait: every 50 ms, the receive and send queues of the TCP sockets
 * of each hop (`ss -tn` in the namespace of each end), summed per role. A receive queue that stays
 * full is a process that does not read fast enough (or paused reading: back-pressure); a send
 * queue that stays full is a peer that does not take the bytes (its window).
 */
class QueueSampler {
  private readonly sums = new Map<string, { total: number; max: number; samples: number }>();
  private timer?: NodeJS.Timeout;
  private busy = false;

  constructor(private readonly sources: { netns?: string; roles: (local: string, peer: string) => { recv?: string; send?: string } }[]) {}

  start(): void {
    this.timer = setInterval(() => {
      if (this.busy) return;
      this.busy = true;
      void Promise.all(this.sources.map((source) => this.sample(source))).finally(() => (this.busy = false));
    }, 50);
  }

  stop(): string {
    clearInterval(this.timer);
    return [...this.sums.entries()].map(([role, v]) => `${role} ${(v.total / v.samples / 1024).toFixed(0)}/${(v.max / 1024).toFixed(0)}`).join(', ');
  }

  private async sample(source: (typeof this.sources)[number]): Promise<void> {
    const r = await runProgram(source.netns ? 'ip' : 'ss', source.netns ? ['netns', 'exec', source.netns, 'ss', '-tnH'] : ['-tnH']);
    const seen = new Map<string, number>();
    for (const line of r.stdout.split('\n')) {
      const [, recvQ, sendQ, local, peer] = line.trim().split(/\s+/);
      if (!local || !peer) continue;
      const roles = source.roles(local, peer);
      if (roles.recv) seen.set(roles.recv, (seen.get(roles.recv) ?? 0) + Number(recvQ));
      if (roles.send) seen.set(roles.send, (seen.get(roles.send) ?? 0) + Number(sendQ));
    }
    for (const [role, bytes] of seen) {
      const v = this.sums.get(role) ?? { total: 0, max: 0, samples: 0 };
      v.total += bytes;
      v.max = Math.max(v.max, bytes);
      v.samples++;
      this.sums.set(role, v);
    }
  }
}

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;

/** Echo times (ms) of `count` single bytes through `ssh -tt … cat` on a raw remote pty. */
async function echoTimes(command: string, args: string[], count: number): Promise<number[]> {
  const ssh = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let err = '';
  ssh.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  // ssh that ends early (refused, unreachable) makes the next write fail with EPIPE: the measurement fails with its stderr
  let failed: Error | undefined;
  let fail: ((error: Error) => void) | undefined;
  const failWith = (why: string) => {
    failed ??= new Error(`${why}; ssh's stderr: ${err.trim() || '(empty)'}`);
    fail?.(failed);
  };
  ssh.stdin!.on('error', (error: Error) => failWith(`writing to ssh failed: ${error.message}`));
  ssh.on('error', (error: Error) => failWith(`ssh could not run: ${error.message}`));
  ssh.on('exit', (code, signal) => failWith(`ssh ended (${signal ?? `exit code ${code}`}) before the echo test was over`));
  let waiting: ((chunk: Buffer) => void) | undefined;
  let pending = '';
  ssh.stdout!.on('data', (d: Buffer) => {
    pending += d.toString('latin1');
    if (waiting) waiting(d);
  });
  const byteBack = (byte: string) =>
    new Promise<void>((resolve, reject) => {
      if (failed) return reject(failed);
      const timer = setTimeout(() => reject(new Error(`no echo in 10 s; stderr: ${err}`)), 10_000);
      fail = (error) => {
        clearTimeout(timer);
        reject(error);
      };
      const check = () => {
        const at = pending.indexOf(byte);
        if (at < 0) return;
        pending = pending.slice(at + 1);
        clearTimeout(timer);
        waiting = undefined;
        fail = undefined;
        resolve();
      };
      waiting = check;
      check();
    });
  const times: number[] = [];
  try {
    // the remote side is ready once a first byte comes back
    ssh.stdin!.write('!');
    await byteBack('!');
    for (let i = 0; i < count + WARMUP_KEYS; i++) {
      const byte = String.fromCharCode(97 + (i % 26));
      const t0 = process.hrtime.bigint();
      ssh.stdin!.write(byte);
      await byteBack(byte);
      if (i >= WARMUP_KEYS) times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  } catch (error) {
    ssh.kill('SIGKILL');
    throw error;
  }
  const exited = new Promise((resolve) => ssh.once('exit', resolve));
  failed = new Error('stopped'); // the exit that follows is ours
  ssh.kill('SIGTERM');
  await exited; // reaped before the next measurement counts its children's CPU
  return times;
}

/**
 * Kills what the bench started and deletes its veth, synchronously, so that it also runs from the
 * 'exit' event (an uncaught error, Ctrl-C): every process in the lab's namespaces (found by
 * namespace, whoever forked them: the agent, sshd and its sessions, a client still copying), and the
 * process group of each child started here (the controller). A namespace that still holds a process
 * outlives `ip netns del` with its veths, hence processes first.
 */
function killEverythingSync(children: ChildProcess[], namespaces: string[], rootIf: string): void {
  for (const ns of namespaces) {
    let pids: string[] = [];
    try {
      pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
        .split(/\s+/)
        .filter(Boolean);
    } catch {
      // no such namespace (not made yet, or gone)
    }
    for (const pid of pids) killQuietly(Number(pid));
  }
  for (const child of children) if (child.pid && child.exitCode === null && child.signalCode === null) killQuietly(-child.pid);
  try {
    execFileSync('ip', ['link', 'del', rootIf], { stdio: 'ignore' });
  } catch {
    // not made, or gone with its peer's namespace
  }
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** Stops a child started here (SIGTERM to its process group, so it writes its CPU profile) and waits for it, SIGKILL after 10 s. */
async function stopGently(child: ChildProcess): Promise<void> {
  if (!child.pid || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  process.kill(-child.pid, 'SIGTERM');
  const timer = setTimeout(() => killQuietly(-child.pid!), 10_000);
  await exited;
  clearTimeout(timer);
}

async function main(): Promise<void> {
  if (!(await labAvailable())) throw new Error('needs root and network namespaces');
  const children: ChildProcess[] = [];
  const namespaces: string[] = [];
  let rootIf = '';
  // registered before the lab's own 'exit' clean-up (which deletes the namespaces): listeners run in order
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-bench-ssh-'));
  const onExit = () => {
    killEverythingSync(children, namespaces, rootIf);
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', onExit);
  const lab = new NetnsLab();
  rootIf = `${lab.prefix}r`;
  namespaces.push(`${lab.prefix}-host`, `${lab.prefix}-vm`);
  try {
    const host = await lab.namespace('host');
    const vm = await lab.namespace('vm');
    await linkControllerToHost(host, rootIf, `${lab.prefix}h`, CONTROLLER_ADDRESS, HOST_ADDRESS);

    const controller = started(
      process.execPath,
      [
        ...nodeArgs('controller'),
        'core/cli/dist/cli.js',
        'serve',
        '--no-sandbox',
        '--no-proxy',
        '--port',
        '0',
        '--host',
        CONTROLLER_ADDRESS,
        '--ssh-port',
        '0',
        '--data-dir',
        join(dir, 'data'),
      ],
      { ...process.env, GATEHOUSE_SSH: 'on' },
    );
    children.push(controller.child);
    const [, url] = await controller.waitFor(/listening on (http:\/\/\S+)/);
    const [, admin] = await controller.waitFor(/keep it:\s+(gh_\S+)\n/);
    const [, sshPort] = await controller.waitFor(/SSH jump server listening on \S+:(\d+)/);
    const api = async (query: string, variables: Record<string, unknown> = {}, secret = admin!) => {
      const response = await fetch(url!, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${secret}` },
        body: JSON.stringify({ query, variables }),
      });
      const body = (await response.json()) as { data?: any; errors?: unknown[] };
      if (body.errors) throw new Error(JSON.stringify(body.errors));
      return body.data;
    };
    await api(
      `mutation { createIpPool(input: { name: "bench", kind: PRIVATE, network: "br-bench", cidr: "10.68.0.0/24", gateway: "${GATEWAY}" }) { __typename ${ERR} } }`,
    );
    const hostId = (await api(`mutation { createHost(input: { name: "lab", backend: "json-file" }) { ... on CreateHostPayload { host { id } } ${ERR} } }`))
      .createHost.host.id;
    const me = (await api(`{ me { id } }`)).me.id;
    const vmAddress = (
      await api(
        `mutation($h: ID!, $o: ID!) { createInstance(input: { hostId: $h, ownerId: $o, name: "vm1", nics: [{ network: "br-bench", allocate: [IPV4] }] }) { ... on CreateInstancePayload { instance { nics { addresses { address } } } } ${ERR} } }`,
        { h: hostId, o: me },
      )
    ).createInstance.instance.nics[0].addresses[0].address as string;
    await lab.link(host, `${GATEWAY}/24`, vm, `${vmAddress}/24`);

    const key = join(dir, 'id');
    await must('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    await api(`mutation($k: String!) { addSshKey(input: { publicKey: $k }) { __typename ${ERR} } }`, { k: readFileSync(`${key}.pub`, 'utf8') });
    const hostKey = join(dir, 'ssh_host_ed25519_key');
    await must('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKey]);
    mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
    const sshd = spawn('ip', ['netns', 'exec', vm.name, ...sshdArgs(hostKey, `${key}.pub`, ['PermitRootLogin prohibit-password'])], {
      stdio: 'ignore',
      detached: true,
    });
    children.push(sshd);
    // the reference jump host: OpenSSH's sshd on the host namespace's address, root's key as on the instance
    const opensshJump = OPENSSH_JUMP
      ? spawn('ip', ['netns', 'exec', host.name, ...sshdArgs(hostKey, `${key}.pub`, ['PermitRootLogin prohibit-password', `ListenAddress ${HOST_ADDRESS}`])], {
          stdio: 'ignore',
          detached: true,
        })
      : undefined;
    if (opensshJump) children.push(opensshJump);

    const agentToken = (
      await api(
        `mutation($h: ID!) { createApiToken(input: { name: "agent", scope: AGENT, hostId: $h }) { ... on CreateApiTokenPayload { created { secret } } ${ERR} } }`,
        { h: hostId },
      )
    ).createApiToken.created.secret as string;
    const agent = started('ip', labAgentArgs(host, REPO, url!, dir, ['--state-dir', join(dir, 'agent-state')], nodeArgs('agent')), {
      ...process.env,
      GATEHOUSE_AGENT_TOKEN: agentToken,
    });
    children.push(agent.child);
    for (let i = 0; ; i++) {
      const s = await api(`query($h: ID!) { host(id: $h) { agent { online } } }`, { h: hostId });
      if (s.host.agent.online) break;
      if (i > 600) throw new Error(`the agent did not come online:\n${agent.output().slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const config = join(dir, 'config');
    writeFileSync(
      config,
      jumpClientConfig({
        controllerAddress: CONTROLLER_ADDRESS,
        sshPort: sshPort!,
        key,
        jumpOptions: JUMP_CIPHER ? [`Ciphers ${JUMP_CIPHER}`] : [],
        options: ['LogLevel ERROR'],
      }) + ['Host opensshjump', `  HostName ${HOST_ADDRESS}`, '  User root', ...(JUMP_CIPHER ? [`  Ciphers ${JUMP_CIPHER}`] : []), ''].join('\n'),
    );
    const through = (program: 'ssh' | 'scp', args: string[]) => ({ command: program, args: ['-F', config, '-J', 'jump', ...args] });
    const viaOpenssh = (program: 'ssh' | 'scp', args: string[]) => ({ command: program, args: ['-F', config, '-J', 'opensshjump', ...args] });
    const direct = (program: 'ssh' | 'scp', args: string[]) => ({ command: 'ip', args: ['netns', 'exec', host.name, program, '-F', config, ...args] });
    const echoArgs = ['-tt', `root@${vmAddress}`, 'stty raw -echo; exec cat'];
    const file = join(dir, 'bulk.bin');
    await must('dd', ['if=/dev/urandom', `of=${file}`, 'bs=1M', `count=${MB}`, 'status=none']);
    const scpArgs = ['-q', file, `root@${vmAddress}:/dev/null`];

    type Path = 'direct' | 'through' | 'openssh-jump';
    const paths: Path[] = OPENSSH_JUMP ? ['direct', 'through', 'openssh-jump'] : ['direct', 'through'];
    const echo: Record<Path, number[]> = { direct: [], through: [], 'openssh-jump': [] };
    const scpWindows: [number, number][] = [];
    const bulk: Record<Path, number[]> = { direct: [], through: [], 'openssh-jump': [] };
    // where the through path spends CPU: the controller (jump server) and the agent (tunnel), per bulk copy
    const cpu = { controller: [] as number[], agent: [] as number[], controllerSystem: [] as number[], agentSystem: [] as number[] };
    const httpPort = new URL(url!).port;
    const queues: Record<Path, string[]> = { direct: [], through: [], 'openssh-jump': [] };
    const sampler = (path: Path) =>
      new QueueSampler([
        {
          roles: (local, peer) =>
            path === 'direct'
              ? {}
              : local === `${CONTROLLER_ADDRESS}:${sshPort}`
                ? { recv: 'jump-server recv' }
                : peer === `${CONTROLLER_ADDRESS}:${sshPort}`
                  ? { send: 'client send' }
                  : local === `${CONTROLLER_ADDRESS}:${httpPort}`
                    ? { send: 'controller→agent send' }
                    : {},
        },
        {
          netns: host.name,
          roles: (local, peer) =>
            peer === `${CONTROLLER_ADDRESS}:${httpPort}`
              ? { recv: 'agent recv' }
              : peer === `${vmAddress}:22`
                ? { send: path === 'direct' ? 'client send' : 'agent→sshd send' }
                : {},
        },
        { netns: vm.name, roles: (local) => (local === `${vmAddress}:22` ? { recv: 'sshd recv' } : {}) },
      ]);
    // and the ends both paths share: the client (scp and its ssh, and the ProxyJump ssh), waited for by this process, and sshd's sessions
    const ends: Record<Path, { client: number[]; sshd: number[]; jump: number[] }> = {
      direct: { client: [], sshd: [], jump: [] },
      through: { client: [], sshd: [], jump: [] },
      'openssh-jump': { client: [], sshd: [], jump: [] },
    };
    const agentPid = () => {
      const children = readFileSync(`/proc/${agent.child.pid}/task/${agent.child.pid}/children`, 'utf8').trim();
      return children ? Number(children.split(' ')[0]) : agent.child.pid; // ip netns exec runs node in its place
    };
    console.log(`processes: controller ${controller.child.pid}, agent ${agentPid()}, sshd ${sshd.pid}`);
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? paths : [...paths].reverse();
      for (const path of order) {
        const make = path === 'direct' ? direct : path === 'through' ? through : viaOpenssh;
        const e = make('ssh', echoArgs);
        echo[path].push(...(await echoTimes(e.command, e.args, KEYS)));
        const s = make('scp', scpArgs);
        const before = {
          controller: cpuSeconds(controller.child.pid),
          agent: cpuSeconds(agentPid()),
          controllerSystem: cpuSeconds(controller.child.pid, false, 'system'),
          agentSystem: cpuSeconds(agentPid(), false, 'system'),
          client: cpuSeconds('self', true),
          sshd: cpuSeconds(sshd.pid, true),
          jump: cpuSeconds(opensshJump?.pid, true),
        };
        const sampling = QUEUES ? sampler(path) : undefined;
        sampling?.start();
        const t0 = process.hrtime.bigint();
        const from = monotonicMicros();
        const r = await runProgram(s.command, s.args);
        if (path === 'through') scpWindows.push([from, monotonicMicros()]);
        if (sampling) queues[path].push(sampling.stop());
        if (r.code !== 0) throw new Error(`scp (${path}) failed: ${r.stderr}`);
        bulk[path].push(MB / (Number(process.hrtime.bigint() - t0) / 1e9));
        await new Promise((r) => setTimeout(r, 200)); // sshd reaps its session
        ends[path].client.push(cpuSeconds('self', true) - before.client);
        ends[path].sshd.push(cpuSeconds(sshd.pid, true) - before.sshd);
        ends[path].jump.push(cpuSeconds(opensshJump?.pid, true) - before.jump);
        if (path === 'through') {
          cpu.controller.push(cpuSeconds(controller.child.pid) - before.controller);
          cpu.agent.push(cpuSeconds(agentPid()) - before.agent);
          cpu.controllerSystem.push(cpuSeconds(controller.child.pid, false, 'system') - before.controllerSystem);
          cpu.agentSystem.push(cpuSeconds(agentPid(), false, 'system') - before.agentSystem);
        }
      }
    }
    const stats = (times: number[]) => {
      const sorted = [...times].sort((a, b) => a - b);
      return { p50: percentile(sorted, 50), p99: percentile(sorted, 99) };
    };
    const d = stats(echo.direct);
    const t = stats(echo.through);
    const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
    const rate = { direct: median(bulk.direct), through: median(bulk.through) };
    const f = (n: number) => n.toFixed(3);
    console.log(`SSH through the controller vs direct, same sshd, same run (${ROUNDS} rounds, ${KEYS} keystrokes and ${MB} MB scp per path per round)`);
    console.log(
      `load average before/after: ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}`,
    );
    console.log(`keystroke echo  direct:  p50 ${f(d.p50)} ms  p99 ${f(d.p99)} ms`);
    console.log(`keystroke echo  through: p50 ${f(t.p50)} ms  p99 ${f(t.p99)} ms`);
    console.log(
      `added by jump server + tunnel: p50 ${f(t.p50 - d.p50)} ms  p99 ${f(t.p99 - d.p99)} ms  (target < 2 ms at p99: ${t.p99 - d.p99 < 2 ? 'MET' : 'NOT MET'})`,
    );
    console.log(`scp ${MB} MB  direct: ${rate.direct.toFixed(1)} MB/s (rounds ${bulk.direct.map((r) => r.toFixed(1)).join(', ')})`);
    console.log(`scp ${MB} MB  through: ${rate.through.toFixed(1)} MB/s (rounds ${bulk.through.map((r) => r.toFixed(1)).join(', ')})`);
    console.log(
      `CPU per ${MB} MB through: controller (jump server) ${cpu.controller.map((c) => c.toFixed(2)).join(', ')} s (kernel ${cpu.controllerSystem.map((c) => c.toFixed(2)).join(', ')}), agent (tunnel) ${cpu.agent.map((c) => c.toFixed(2)).join(', ')} s (kernel ${cpu.agentSystem.map((c) => c.toFixed(2)).join(', ')})`,
    );
    for (const path of paths)
      console.log(
        `CPU per ${MB} MB ${path}: client (scp + ssh) ${ends[path].client.map((c) => c.toFixed(2)).join(', ')} s, sshd ${ends[path].sshd.map((c) => c.toFixed(2)).join(', ')} s${path === 'openssh-jump' ? `, OpenSSH jump host ${ends[path].jump.map((c) => c.toFixed(2)).join(', ')} s` : ''}`,
      );
    const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);
    const total = {
      direct: (sum(ends.direct.client) + sum(ends.direct.sshd)) / ROUNDS,
      through: (sum(ends.through.client) + sum(ends.through.sshd) + sum(cpu.controller) + sum(cpu.agent)) / ROUNDS,
    };
    console.log(
      `CPU of all processes per ${MB} MB: direct ${total.direct.toFixed(2)} s, through ${total.through.toFixed(2)} s; where the machine's CPU is what limits both (a loaded machine), through/direct ≈ ${(total.direct / total.through).toFixed(2)}`,
    );
    if (OPENSSH_JUMP) {
      const o = ends['openssh-jump'];
      const rateOpenssh = median(bulk['openssh-jump']);
      console.log(
        `reference, ssh -J through OpenSSH's sshd: ${rateOpenssh.toFixed(1)} MB/s (rounds ${bulk['openssh-jump'].map((r) => r.toFixed(1)).join(', ')}), ratio to direct ${(rateOpenssh / rate.direct).toFixed(2)}; CPU of all its processes per ${MB} MB ${((sum(o.client) + sum(o.sshd) + sum(o.jump)) / ROUNDS).toFixed(2)} s; echo p50 ${f(stats(echo['openssh-jump']).p50)} ms p99 ${f(stats(echo['openssh-jump']).p99)} ms`,
      );
    }
    for (const path of paths) for (const q of queues[path]) console.log(`queued KB (mean/max) during ${path} scp: ${q}`);
    console.log(
      `throughput ratio through/direct: ${(rate.through / rate.direct).toFixed(2)}  (target ≥ 0.70: ${rate.through / rate.direct >= 0.7 ? 'MET' : 'NOT MET'})`,
    );
    if (process.env.BENCH_SSH_OUTPUT) {
      writeFileSync(join(process.env.BENCH_SSH_OUTPUT, 'controller.log'), controller.output());
      writeFileSync(join(process.env.BENCH_SSH_OUTPUT, 'agent.log'), agent.output());
    }
    // for profilers of the whole machine (e.g. `perf record -k CLOCK_MONOTONIC -a`): when the through copies ran
    console.log(`through copies ran (CLOCK_MONOTONIC µs): ${JSON.stringify(scpWindows)}`);
    if (CPU_PROF) {
      await stopGently(agent.child);
      await stopGently(controller.child);
      writeFileSync(join(CPU_PROF, 'through-scp-windows.json'), JSON.stringify(scpWindows));
      console.log(
        `CPU profiles in ${CPU_PROF}/controller and ${CPU_PROF}/agent (the main thread's is the largest file); the through copies' windows: ${CPU_PROF}/through-scp-windows.json (npx tsx bench/cpuprofile-top.ts <profile> --windows <that file>)`,
      );
    }
  } finally {
    killEverythingSync(children, namespaces, rootIf);
    process.removeListener('exit', onExit);
    await lab.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
}

console.log(
  `load average at start: ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}`,
);
await main();
