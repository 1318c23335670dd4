/**
 * The lab that the SSH end-to-end tests (ssh-e2e.test.ts) and bench/ssh.ts share: this machine's
 * namespace (the controller and the client) joined to a host namespace by a veth pair, the
 * instance's sshd in its own namespace, the host agent's command line, and the client's ssh
 * config with the controller's jump server as "jump". Programs get argument arrays, never a shell.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import type { LabNamespace } from '@gatehouse/sdk/testkit';

/** What a program run ended with. */
export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program (argument array) and resolves with its exit code and output, whatever the code. */
export function runProgram(command: string, args: string[], timeoutMs = 60_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(command, args, { timeout: timeoutMs, maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      const code = error ? (typeof (error as { code?: unknown }).code === 'number' ? (error as { code: number }).code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * Joins this machine's namespace (`controllerAddress` on `rootIf`) to the host namespace
 * (`hostAddress`), a /30 of their own: the controller's only way to the host.
 */
export async function linkControllerToHost(host: LabNamespace, rootIf: string, hostIf: string, controllerAddress: string, hostAddress: string): Promise<void> {
  for (const args of [
    ['link', 'add', rootIf, 'type', 'veth', 'peer', 'name', hostIf, 'netns', host.name],
    ['addr', 'add', `${controllerAddress}/30`, 'dev', rootIf],
    ['link', 'set', rootIf, 'up'],
  ]) {
    const r = await runProgram('ip', args);
    if (r.code !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
  }
  await host.exec('ip', ['addr', 'add', `${hostAddress}/30`, 'dev', hostIf]);
  await host.exec('ip', ['link', 'set', hostIf, 'up']);
}

/** The arguments of the instance's `sshd -D` on port 22: this host key, these authorized keys, no PAM, sftp inside; `options` adds `-o` settings. */
export function sshdArgs(hostKey: string, authorizedKeys: string, options: string[] = []): string[] {
  return [
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
    `AuthorizedKeysFile ${authorizedKeys}`,
    '-o',
    'PidFile none',
    '-o',
    'StrictModes no',
    '-o',
    'UsePAM no',
    ...options.flatMap((o) => ['-o', o]),
    '-o',
    'Subsystem sftp internal-sftp',
  ];
}

/**
 * `ip netns exec <host> node … host-agent cli` with the json-file plugin (the tunnel does not depend
 * on the backend), run from the repository; `extra`: more agent arguments, `nodeArgs`: node's own.
 */
export function labAgentArgs(host: LabNamespace, repo: string, controllerUrl: string, dir: string, extra: string[] = [], nodeArgs: string[] = []): string[] {
  return [
    'netns',
    'exec',
    host.name,
    process.execPath,
    ...nodeArgs,
    '--import',
    'tsx',
    'agents/host-agent/src/cli.ts',
    '--controller',
    controllerUrl,
    '--plugin',
    join(repo, 'core/sdk/examples/json-file-plugin.ts'),
    '--plugin-config',
    JSON.stringify({ path: join(dir, 'forwards.json') }),
    ...extra,
  ];
}

/**
 * An ssh client config: the jump server as "jump" (user gatehouse), `key` for every host, no agent,
 * batch mode. Host keys are checked against `knownHosts` files when given (`jump`: the jump
 * server's, `instances`: the instances'), otherwise not checked at all (the bench).
 */
export function jumpClientConfig(o: {
  controllerAddress: string;
  sshPort: number | string;
  key: string;
  knownHosts?: { jump: string; instances: string };
  jumpOptions?: string[];
  options?: string[];
}): string {
  return [
    'Host jump',
    `  HostName ${o.controllerAddress}`,
    `  Port ${o.sshPort}`,
    '  User gatehouse',
    ...(o.knownHosts ? [`  UserKnownHostsFile ${o.knownHosts.jump}`] : []),
    ...(o.jumpOptions ?? []).map((l) => `  ${l}`),
    'Host *',
    `  IdentityFile ${o.key}`,
    '  IdentitiesOnly yes',
    '  IdentityAgent none',
    '  BatchMode yes',
    ...(o.knownHosts
      ? ['  StrictHostKeyChecking yes', `  UserKnownHostsFile ${o.knownHosts.instances}`]
      : ['  StrictHostKeyChecking no', '  UserKnownHostsFile /dev/null']),
    ...(o.options ?? []).map((l) => `  ${l}`),
    '',
  ].join('\n');
}
