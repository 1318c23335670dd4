/**
 * Names and addresses of the sandbox host: one place, so the network setup, the database objects,
 * the printed walkthrough and the README agree.
 */

/** What the sandbox consists of on this machine and in the database. */
export interface SandboxLayout {
  /** The host's network namespace: the linux plugin's `hostNetns` (nft table, bridge, veth host ends, tc). */
  hostNetns: string;
  /** Instance namespaces are `${namespacePrefix}${instance}`: the plugin's `namespacePrefix`. */
  namespacePrefix: string;
  /** The veth pair joining this machine's namespace (rootIf) to the host namespace (hostIf). */
  rootIf: string;
  hostIf: string;
  /** The /30 between them: this machine's side and the host's public address. */
  uplinkSubnet: string;
  rootAddress: string;
  publicAddress: string;
  uplinkPrefixLength: number;
  /** The instances' network: pool network and bridge name inside the host namespace (15 characters at most). */
  network: string;
  pool: { name: string; cidr: string; gateway: string; start: string; end: string };
  /** Names of the host and the agent token in the database. */
  hostName: string;
  tokenName: string;
  /** Demo instances, each with an HTTP server on `demoPort`. */
  instances: readonly string[];
  demoPort: number;
  /** Host ports suggested for the first forward, the lowest free one first. */
  suggestedHostPorts: readonly number[];
}

/**
 * The sandbox. 100.64.89.0/30 is in the shared address space (RFC 6598), which hosts rarely route
 * themselves; the controller refuses to start the sandbox when any of it is in use.
 */
export const SANDBOX_LAYOUT: SandboxLayout = {
  hostNetns: 'gh-sandbox',
  namespacePrefix: 'gh-sandbox-',
  rootIf: 'gh-sbx-root',
  hostIf: 'gh-sbx-up',
  uplinkSubnet: '100.64.89.0/30',
  rootAddress: '100.64.89.1',
  publicAddress: '100.64.89.2',
  uplinkPrefixLength: 30,
  network: 'gh-sbx-br',
  pool: { name: 'sandbox', cidr: '10.89.0.0/24', gateway: '10.89.0.1', start: '10.89.0.10', end: '10.89.0.254' },
  hostName: 'sandbox',
  tokenName: 'sandbox-agent',
  instances: ['web1', 'web2'],
  demoPort: 80,
  suggestedHostPorts: [8080, 8081, 8082, 8083, 8084, 8085, 8086, 8087, 8088, 8089],
};

/** The namespace of a demo instance (its externalId). */
export function instanceNetns(layout: SandboxLayout, instance: string): string {
  return `${layout.namespacePrefix}${instance}`;
}
