/**
 * The embedded default's sandbox: `gatehouse serve` run as root creates a sandbox host in its own
 * network namespaces with two demo instances, and runs an in-process host agent (the linux plugin
 * confined to the sandbox's host namespace) for it, so what a newcomer creates in GraphiQL can be
 * tried with `curl` at once. The controller knows nothing of it: only the CLI loads this module.
 */
import { HostAgent, pluginSpecifier, type AgentLogger } from '@gatehouse/host-agent';
import { loadDriver, type NetworkDriver } from '@gatehouse/sdk';
import type { Controller, Logger } from '@gatehouse/server';
import { ensureSandboxObjects, type SandboxObjects } from './sandbox-objects.js';
import { SANDBOX_LAYOUT, type SandboxLayout } from './sandbox-layout.js';
import { SandboxNetwork, SandboxUnavailableError } from './sandbox-network.js';

export { SandboxUnavailableError } from './sandbox-network.js';

/** A running sandbox with its agent. */
export interface EmbeddedSandbox {
  readonly objects: SandboxObjects;
  /** What to do next, ready to print. */
  readonly instructions: string;
  /** Stops the agent, the demo servers, and removes the namespaces; idempotent. */
  stop(): Promise<void>;
  /** Removes what `stop` removes, synchronously (last resort at process exit). */
  stopSync(): void;
}

/** Options of `startSandbox`. */
export interface SandboxOptions {
  logger: Logger;
  layout?: SandboxLayout;
  stateFile?: string;
  /** How long to wait for the agent's first apply before printing the walkthrough anyway. */
  firstApplyTimeoutMs?: number;
}

/** Why there is no sandbox without root, or when the machine lacks what it needs; undefined when it can start. */
export function sandboxPrerequisiteProblem(): string | undefined {
  const uid = process.getuid?.();
  if (uid !== 0) return `it needs root (network namespaces, nftables, tc) and this controller runs as uid ${uid ?? 'unknown'}`;
  return undefined;
}

/** The URL an in-process agent dials: a wildcard listen address is reached on loopback. */
function loopbackUrl(url: string): string {
  return url.replace('//0.0.0.0:', '//127.0.0.1:').replace('//[::]:', '//[::1]:');
}

/**
 * Creates (or re-creates) the sandbox and starts its agent; resolves after the agent's first apply.
 * Throws SandboxUnavailableError (with a message for the operator) when it cannot, after undoing
 * whatever it had created.
 */
export async function startSandbox(controller: Controller, options: SandboxOptions): Promise<EmbeddedSandbox> {
  const layout = options.layout ?? SANDBOX_LAYOUT;
  const log = options.logger;
  const network = await SandboxNetwork.claim(layout, options.stateFile);
  let agent: HostAgent | undefined;
  try {
    const objects = await ensureSandboxObjects(controller.container, layout);
    await network.create();
    for (const instance of objects.instances) await network.startDemoServer(instance.name, instance.address);
    const agentLogger: AgentLogger = {
      info: (m, f) => log.info(`[sandbox agent] ${m}${f ? ` ${JSON.stringify(f)}` : ''}`),
      warn: (m, f) => log.warn(`[sandbox agent] ${m}${f ? ` ${JSON.stringify(f)}` : ''}`),
      error: (m, f) => log.error(`[sandbox agent] ${m}${f ? ` ${JSON.stringify(f)}` : ''}`),
    };
    const abort = new AbortController();
    const driver: NetworkDriver = await loadDriver(
      pluginSpecifier('linux'),
      { hostNetns: layout.hostNetns, namespacePrefix: layout.namespacePrefix },
      {
        logger: { debug: () => undefined, ...agentLogger },
        signal: abort.signal,
        host: { id: objects.hostId, name: layout.hostName, publicAddresses: [layout.publicAddress] },
      },
    );
    agent = new HostAgent({ controllerUrl: loopbackUrl(controller.url), token: objects.agentSecret, hostId: objects.hostId, driver, logger: agentLogger });
    const running = agent;
    const firstApply = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), options.firstApplyTimeoutMs ?? 30_000);
      running.once('applied', () => {
        clearTimeout(timer);
        resolve(true);
      });
      running.once('refused', () => {
        clearTimeout(timer);
        resolve(false);
      });
    });
    await agent.start();
    if (!(await firstApply)) log.warn('[sandbox agent] has not applied the sandbox yet; the walkthrough below works once it has (see its log lines)');
    let stopped = false;
    return {
      objects,
      instructions: sandboxInstructions(layout, objects, controller.url),
      async stop() {
        if (stopped) return;
        stopped = true;
        abort.abort();
        await running.stop().catch((err: unknown) => log.warn(`[sandbox agent] stopping: ${(err as Error).message}`));
        await network.teardown();
      },
      stopSync() {
        network.teardownSync();
      },
    };
  } catch (err) {
    await agent?.stop().catch(() => undefined);
    await network.teardown();
    if (err instanceof SandboxUnavailableError) throw err;
    throw new SandboxUnavailableError(`setting it up failed: ${(err as Error).message}`);
  }
}

/** The walkthrough printed after start: ids, a createPortForward to paste into GraphiQL, and the curl that uses it. */
export function sandboxInstructions(layout: SandboxLayout, objects: SandboxObjects, controllerUrl: string): string {
  // the first instance nothing forwards to yet, so every suggestion shows something new
  const web = objects.instances.find((i) => !objects.forwards.some((f) => f.instanceName === i.name)) ?? objects.instances[0]!;
  const taken = (port: number) => objects.forwards.some((f) => f.protocol !== 'udp' && f.hostPortStart <= port && port <= f.hostPortEnd);
  const hostPort = layout.suggestedHostPorts.find((p) => !taken(p));
  const lines = [
    '',
    `Sandbox host "${layout.hostName}" (id ${objects.hostId}): network namespace ${layout.hostNetns}, public address ${layout.publicAddress},`,
    `reached from this machine through ${layout.rootIf} (${layout.rootAddress}/${layout.uplinkPrefixLength}). Its agent runs in this process.`,
    `Instances, each answering HTTP on port ${layout.demoPort}:`,
    ...objects.instances.map((i) => `    ${i.name}  id ${i.id}  address ${i.address}  (namespace ${i.netns})`),
    '',
  ];
  if (objects.forwards.length > 0) {
    lines.push('Forwards it already has:');
    for (const f of objects.forwards) {
      const ports = f.hostPortStart === f.hostPortEnd ? `${f.hostPortStart}` : `${f.hostPortStart}-${f.hostPortEnd}`;
      const use = f.protocol === 'udp' ? `udp ${layout.publicAddress}:${ports}` : `curl http://${layout.publicAddress}:${f.hostPortStart}/`;
      lines.push(`    ${use}   → ${f.instanceName} ${f.targetAddress}:${f.targetPortStart}`);
    }
    lines.push('');
  }
  if (hostPort !== undefined) {
    lines.push(
      `Forward port ${hostPort} of the sandbox to ${web.name}: in GraphiQL (${controllerUrl.replace('127.0.0.1', 'localhost')}, with your admin token) run`,
      '',
      'mutation {',
      `  createPortForward(input: { instanceId: "${web.id}", protocol: TCP, hostPort: "${hostPort}", targetPort: "${layout.demoPort}" }) {`,
      '    ... on CreatePortForwardPayload { portForward { id hostPorts { start } targetAddress status } }',
      '    ... on Error { code message field value }',
      '  }',
      '}',
      '',
      'then, from this machine:',
      '',
      `    curl http://${layout.publicAddress}:${hostPort}/`,
      `    hello from ${web.name} (${web.address})`,
      '',
    );
  }
  lines.push('Stopping the controller (Ctrl-C) removes the sandbox namespaces; its objects stay in the database for the next start.', '');
  return lines.join('\n');
}

/** What to do without the sandbox: the API works; agents run on real hosts. */
export function noSandboxInstructions(reason: string, controllerUrl: string): string {
  const url = controllerUrl.replace('127.0.0.1', 'localhost');
  return [
    '',
    `No sandbox host: ${reason}.`,
    'Without it nothing here creates network namespaces, nftables rules or tc shaping. The API and GraphiQL',
    `(${url}) work fully; objects stay PENDING until an agent applies them. To apply them on a real Linux host,`,
    'create the host and an AGENT token for it in GraphiQL:',
    '',
    '    mutation { createApiToken(input: { name: "hv-1-agent", scope: AGENT, hostId: "<host id>" }) {',
    '      ... on CreateApiTokenPayload { created { secret } } ... on Error { code message } } }',
    '',
    'and run the agent there as root (the controller must listen where the host can reach it: --host 0.0.0.0):',
    '',
    `    gatehouse agent --controller ${controllerUrl.replace('127.0.0.1', '<controller address>')} --token gh_... --plugin linux`,
    '',
    '(GATEHOUSE_AGENT_TOKEN=gh_... instead of --token keeps the token out of `ps`.)',
    '',
  ].join('\n');
}
