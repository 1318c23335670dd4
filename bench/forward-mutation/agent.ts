/**
 * The host agent of bench/forward-mutation.ts with BENCH_MUTATION_AGENT=1, in its own process: the
 * real agent (desired-state patches, status reports, drift polls every 2 s) with a driver that
 * applies everything at once and touches nothing, so the controller does what it does for a live
 * host while the bench times its answers. Prints "applied N" after each apply.
 *
 *   node agent.ts   (GATEHOUSE_BENCH_AGENT: JSON with controllerUrl, token, hostId)
 */
import { HostAgent } from '../../agents/host-agent/src/index.js';
import { ScriptedDriver } from '../../agents/host-agent/test/scripted-driver.js';

const config = JSON.parse(process.env.GATEHOUSE_BENCH_AGENT ?? 'null') as { controllerUrl: string; token: string; hostId: string } | null;
if (!config) throw new Error('forward-mutation agent: GATEHOUSE_BENCH_AGENT (JSON) is required');

const quiet = { info() {}, warn() {}, error: (m: string, f?: unknown) => console.error(`agent: ${m} ${JSON.stringify(f ?? {})}`) };
const agent = new HostAgent({
  ...config,
  driver: new ScriptedDriver(),
  logger: quiet,
  driftIntervalMs: 2_000,
  portAudit: false,
  backoff: { minMs: 100, maxMs: 1000 },
});
agent.on('applied', (state) => process.stdout.write(`applied ${state.appliedRevision}\n`));
process.once('SIGTERM', () => void agent.stop().finally(() => process.exit(0)));
await agent.start();
