/**
 * The host agent of bench/forward-live.ts in its own process (as on a real host, not sharing the
 * controller's event loop): the Linux plugin on the lab's host namespace, a state directory of its
 * own, and every log line printed as `log NS {"message","fields"}` with the CLOCK_MONOTONIC time in
 * nanoseconds (the clock of the bench and its prober), so the bench can place "agent received
 * revision N" and "applied in X ms" on the path of each change.
 *
 *   node agent.ts   (configuration as JSON in GATEHOUSE_BENCH_AGENT: controllerUrl, token, hostId, hostNetns, namespacePrefix, stateDir, statsIntervalMs)
 */
import { HostAgent } from '../../agents/host-agent/src/index.js';
import { LinuxDriver } from '../../plugins/linux/src/index.js';

interface AgentConfig {
  controllerUrl: string;
  token: string;
  hostId: string;
  hostNetns: string;
  namespacePrefix: string;
  stateDir: string;
  statsIntervalMs: number;
}

const config = JSON.parse(process.env.GATEHOUSE_BENCH_AGENT ?? 'null') as AgentConfig | null;
if (!config) throw new Error('forward-live agent: GATEHOUSE_BENCH_AGENT (JSON) is required');

const line = (message: string, fields?: unknown) => process.stdout.write(`log ${process.hrtime.bigint()} ${JSON.stringify({ message, fields })}\n`);

const agent = new HostAgent({
  controllerUrl: config.controllerUrl,
  token: config.token,
  hostId: config.hostId,
  driver: new LinuxDriver({ hostNetns: config.hostNetns, namespacePrefix: config.namespacePrefix }),
  logger: { info: line, warn: line, error: line },
  driftIntervalMs: 2_000,
  stateDir: config.stateDir,
  statsIntervalMs: config.statsIntervalMs,
  backoff: { minMs: 100, maxMs: 1000 },
  // the port audit reads the listening sockets of the namespace the agent runs in (this machine's, shared with
  // whatever else runs here), which would refuse seeded ports that something unrelated listens on
  portAudit: false,
});
process.once('SIGTERM', () => void agent.stop().finally(() => process.exit(0)));
await agent.start();
line('started');
