/** @gatehouse/host-agent: the daemon that keeps a host equal to its desired state. */
export { HostAgent, type HostAgentOptions, type HostAgentState } from './agent.js';
export { pluginSpecifier, runAgent } from './cli.js';
export { ControllerConnection, TokenRefusedError, websocketUrl, type AgentLogger, type DesiredStateEvent } from './controller.js';
export { DEFAULT_MAX_TUNNEL_STREAMS, TunnelStreams, instanceAddresses, serveTunnels, type TunnelOptions } from './tunnel.js';
