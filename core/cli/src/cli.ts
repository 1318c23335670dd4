#!/usr/bin/env node
/**
 * The `gatehouse` command (usage and the composition of the controller side: commands.ts).
 *
 *   gatehouse serve …                 the controller (commands.ts)
 *   gatehouse agent --controller URL[,URL...] --token T --plugin linux …
 *                                     a host agent: @gatehouse/host-agent's own command, so one
 *                                     installed `gatehouse` runs both sides
 *   gatehouse renew-certificates …, gatehouse print-schema …
 *
 * `agent` loads only the host agent, never the controller: a host restarting with its controller
 * down gets its cached rules back sooner (loading @gatehouse/server took about 1 s of the agent's
 * start; bench/outage.ts).
 */
const [command, ...rest] = process.argv.slice(2);
const run =
  command === 'agent'
    ? import('@gatehouse/host-agent').then(({ runAgent }) => runAgent(rest))
    : import('./commands.js').then(({ runCommand }) => runCommand(command, rest));
run.catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
