/** @gatehouse/host-agent: the daemon that keeps a host equal to its desired state. */
export { HostAgent, type HostAgentOptions, type HostAgentState, type StartedFrom } from './agent.js';
export { pluginSpecifier, runAgent } from './cli.js';
export { ControllerConnection, TokenRefusedError, websocketUrl, type AgentLogger, type DesiredStateEvent } from './controller.js';
export { DEFAULT_MAX_TUNNEL_STREAMS, TunnelStreams, instanceAddresses, serveTunnels, type TunnelOptions } from './tunnel.js';
export { DEFAULT_STATE_DIR, STATE_CACHE_FILE, STATE_CACHE_FORMAT, StateCache, StateCacheRefusedError, type CachedState } from './state-cache.js';
export { parseSocketTable, readListeningSockets, type ListeningSocketOptions } from './listening-sockets.js';
