/**
 * A host agent's tunnel side alone, in its own process (so a test can kill it): serves the
 * controller's stream requests for one host as if `address` were its only instance's address.
 *
 *   tsx tunnel-agent.ts CONTROLLER_URL HOST_ID ADDRESS PORTS   (token in GATEHOUSE_AGENT_TOKEN)
 */
import { ControllerConnection, serveTunnels } from '@gatehouse/host-agent';
import type { DesiredState } from '@gatehouse/sdk';

const [url, hostId, address, ports] = process.argv.slice(2) as [string, string, string, string];
const logger = { info: console.info, warn: console.warn, error: console.error };
const connection = new ControllerConnection({ url, token: process.env.GATEHOUSE_AGENT_TOKEN!, logger, onConnected: () => console.info('connected') });
const desired = { instances: [{ nics: [{ addresses: [{ address, delegated: false }] }] }] } as unknown as DesiredState;
serveTunnels(connection, hostId, { controllerUrl: url, token: process.env.GATEHOUSE_AGENT_TOKEN!, logger, ports: ports.split(',').map(Number) }, () => desired);
