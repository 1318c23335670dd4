/**
 * Each mutation's result union lists exactly the errors it declares, and each declared error is
 * produced at least once through GraphQL: a table of mutation → error type → a request that
 * produces it, checked against the printed schema so that a declaration without a request here
 * fails. An expected failure a mutation does not declare reaches the client as a masked
 * unexpected error (and is logged), never as a member of the union.
 */
import 'reflect-metadata';
import { readFileSync } from 'node:fs';
import { getNamedType, isUnionType, type GraphQLField } from 'graphql';
import { generateEd25519KeyPair } from '../src/ssh/ed25519.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore, type Store } from '../src/db/database.js';
import { needsCheck } from '../src/graphql/argument-checks.js';
import { ERROR_CLASSES } from '../src/graphql/builder.js';
import { gatehouseSchema } from '../src/graphql/schema.js';
import { NotFoundError, PoolExhaustedError } from '../src/support/errors.js';
import { newId } from '../src/support/ids.js';
import { createContainer, createGatehouseYoga } from '../src/server.js';
import { UserService } from '../src/services/user-service.js';
import { createTestApi, type Client, type TestApi } from '../src/testing/api.js';
import { createHost, createPool } from '../src/testing/fixtures.js';

type Input = Record<string, unknown>;

/** What the requests of the table need: users, and objects to refer to. */
interface World {
  api: TestApi;
  /** A user without quotas, owner of `vmId`. */
  tenant: Client;
  tenantId: string;
  /** A user whose port forward and web proxy quotas are 0, owner of `zeroVmId`. */
  zero: Client;
  /** A user whose IPv4 quota is 0, owner of `noipVmId` (whose NIC has no address). */
  noip: Client;
  noipId: string;
  hostId: string;
  /** A host whose only forwardable port, 3000, is taken by a forward to `tightVmId`. */
  tightHostId: string;
  poolId: string;
  tinyPoolId: string;
  /** The system reservation of the pool's gateway 10.20.0.1. */
  gatewayEntryId: string;
  vmId: string;
  nicId: string;
  /** The address 10.20.0.10 of `nicId`, target of `forwardId`. */
  addressId: string;
  /** The NIC of `vmId` on the full pool `tinyPoolId`. */
  tinyNicId: string;
  zeroVmId: string;
  noipVmId: string;
  noipNicId: string;
  tightVmId: string;
  /** The tenant's instance (one NIC, 10.20.0.40) on `capsHostId`, whose driver is narrow (see NARROW). */
  capsVmId: string;
  /** An OUTBOUND ALLOW rule of `capsVmId`. */
  capsRuleId: string;
  capsHostId: string;
  forwardId: string;
  /** A user whose quotaForwardedPorts is 1, and their one-port forward (host port 2400). */
  small: Client;
  smallForwardId: string;
  /** The tenant's TCP forward to `capsVmId`. */
  capsForwardId: string;
  ruleId: string;
  firewallTemplateId: string;
  webProxyId: string;
  domainTemplateId: string;
}

/** A request: the input, sent by the admin unless a client is given. */
interface Request {
  client?: Client;
  input?: Input;
}

/** A public key the tenant holds (added in the world). */
const TENANT_SSH_KEY = generateEd25519KeyPair().public;
/** An id that exists nowhere. */
const MISSING = newId();
/** An argument the argument checks refuse (not an id). */
const BAD_ID = 'not-an-id';
const HEADER = 'protocol,host_port,vm_ip,vm_port,note';
const rule = { direction: 'INBOUND', protocol: 'TCP', ports: '22', action: 'ALLOW' };
const trafficReport = { bootId: 'boot-1', sequence: 1, nics: { at: '2026-01-01T00:00:00Z', intervalMs: 1000, counters: [] } };
const agentReport = { agentVersion: '1.0.0', pluginId: 'linux' };
const newPool = { name: 'p-new', kind: 'PRIVATE', network: 'br-new', cidr: '10.99.0.0/24' };

/** The driver reported for the caps host: TCP forwards only, outbound allow/reject rules, egress shaping, one NIC. */
const NARROW = {
  portForwards: { implementation: 'dataplane', protocols: ['tcp'], portRanges: true, ipv6: true, sourceAllowLists: true },
  firewall: { implementation: 'dataplane', directions: ['outbound'], actions: ['allow', 'reject'], priorities: true, ipv6: true, icmp: true },
  shaping: { implementation: 'dataplane', ingress: false, egress: true, burst: true },
  nics: { max: 1, hotplug: true, staticAddressing: true },
};

/**
 * Pairs that need a race one request cannot set up, driven through GraphQL by the named test file
 * (which must contain the expectation quoted here).
 */
const DRIVEN_ELSEWHERE: Record<string, Record<string, { file: string; expects: string }>> = {
  // a forward created on a planned port while the import's staged rows are written
  importPortForwards: { ConflictError: { file: './staged-import.test.ts', expects: "toMatchObject({ code: 'CONFLICT', field: 'input.csv' })" } },
  // the sixth attempt after five failures
  // an agent online without the diagnosis subscription; an answer with a request id the controller never gave
  diagnosePortForward: {
    CapabilityNotSupportedError: {
      file: './port-forward-diagnosis.test.ts',
      expects: "toMatchObject({ __typename: 'CapabilityNotSupportedError', code: 'CAPABILITY_NOT_SUPPORTED', field: 'input.portForwardId' })",
    },
  },
  reportPortForwardDiagnosis: { NotFoundError: { file: './port-forward-diagnosis.test.ts', expects: "toMatchObject({ code: 'NOT_FOUND', field: 'input.requestId' })" } },
  signIn: { RateLimitedError: { file: './sessions.test.ts', expects: "toMatchObject({ __typename: 'RateLimitedError', code: 'RATE_LIMITED', field: 'input.username' })" } },
};

/** Mutation → declared error type → a request that produces it. */
const CASES: Record<string, Record<string, (w: World) => Request>> = {
  addSshKey: {
    ValidationError: (w) => ({ client: w.tenant, input: { publicKey: 'ssh-ed25519 not-base64' } }),
    ConflictError: (w) => ({ client: w.tenant, input: { publicKey: TENANT_SSH_KEY } }),
  },
  removeSshKey: {
    ValidationError: (w) => ({ client: w.tenant, input: { keyId: BAD_ID } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { keyId: MISSING } }),
  },
  openTerminal: {
    // a 1 MB login name and NUL bytes are refused at the boundary, naming input.username
    ValidationError: (w) => ({ client: w.tenant, input: { instanceId: w.vmId, username: `root\u0000${'a'.repeat(1 << 20)}` } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { instanceId: w.zeroVmId, username: 'root' } }),
  },
  forgetInstanceSshHostKeys: {
    ValidationError: (w) => ({ client: w.tenant, input: { instanceId: BAD_ID } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { instanceId: w.vmId } }),
  },
  createUser: {
    ValidationError: () => ({ input: { name: '' } }),
    ForbiddenError: (w) => ({ client: w.tenant, input: { name: 'someone' } }),
    ConflictError: () => ({ input: { name: 'tenant' } }),
  },
  updateUserQuotas: {
    ValidationError: (w) => ({ input: { userId: w.tenantId, quotaPortForwards: -1 } }),
    ForbiddenError: (w) => ({ client: w.tenant, input: { userId: w.tenantId } }),
    NotFoundError: () => ({ input: { userId: MISSING } }),
  },
  setTerminalRecording: {
    ValidationError: () => ({ input: { userId: BAD_ID, enabled: true } }),
    ForbiddenError: (w) => ({ client: w.tenant, input: { userId: w.tenantId, enabled: true } }),
    NotFoundError: () => ({ input: { userId: MISSING, enabled: true } }),
  },
  createApiToken: {
    ValidationError: () => ({ input: { name: '' } }),
    ForbiddenError: (w) => ({ client: w.tenant, input: { name: 'mine', scope: 'ADMIN' } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { name: 'theirs', userId: w.noipId } }),
  },
  revokeApiToken: {
    ValidationError: () => ({ input: { tokenId: BAD_ID } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { tokenId: MISSING } }),
  },
  signIn: {
    ValidationError: () => ({ input: { username: '', password: 'whatever-it-is' } }),
    SignInFailedError: () => ({ input: { username: 'tenant', password: 'not-the-password' } }),
  },
  // with an API token: sessions end with signOut, API tokens with revokeApiToken
  signOut: { ForbiddenError: (w) => ({ client: w.tenant }) },
  setPassword: {
    ValidationError: (w) => ({ input: { userId: w.tenantId, password: 'short' } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { userId: w.noipId, password: 'long-enough-password', currentPassword: 'x' } }),
  },
  createHost: {
    ValidationError: () => ({ input: { name: 'h-new', backend: 'LINUX', portRangeStart: 0 } }),
    ForbiddenError: (w) => ({ client: w.tenant, input: { name: 'h-new', backend: 'LINUX' } }),
    NotFoundError: () => ({ input: { name: 'h-new', backend: 'LINUX', defaultPoolId: MISSING } }),
    ConflictError: () => ({ input: { name: 'h1', backend: 'LINUX' } }),
  },
  updateHost: {
    ValidationError: (w) => ({ input: { hostId: w.hostId, publicAddresses: ['203.0.113.1', '203.0.113.1'] } }),
    ForbiddenError: (w) => ({ client: w.tenant, input: { hostId: w.hostId, name: 'h2' } }),
    NotFoundError: () => ({ input: { hostId: MISSING } }),
    ConflictError: (w) => ({ input: { hostId: w.tightHostId, name: 'h1' } }),
  },
  deleteHost: {
    ValidationError: () => ({ input: { hostId: BAD_ID } }),
    ForbiddenError: (w) => ({ client: w.tenant, input: { hostId: w.hostId } }),
    NotFoundError: () => ({ input: { hostId: MISSING } }),
    ConflictError: (w) => ({ input: { hostId: w.hostId } }),
  },
  reportHostStatus: {
    ValidationError: (w) => ({ input: { hostId: w.hostId, ...agentReport, pluginId: 'no spaces' } }),
    ForbiddenError: (w) => ({ client: w.tenant, input: { hostId: w.hostId, ...agentReport } }),
    NotFoundError: () => ({ input: { hostId: MISSING, ...agentReport } }),
  },
  reportTraffic: {
    ValidationError: (w) => ({ input: { ...trafficReport, hostId: w.hostId, sequence: -1 } }),
    ForbiddenError: (w) => ({ client: w.tenant, input: { ...trafficReport, hostId: w.hostId } }),
    NotFoundError: () => ({ input: { ...trafficReport, hostId: MISSING } }),
  },
  reportObjectStatus: {
    ValidationError: (w) => ({ input: { hostId: w.hostId, revision: -1, objects: [] } }),
    ForbiddenError: (w) => ({ client: w.tenant, input: { hostId: w.hostId, revision: 0, objects: [] } }),
    NotFoundError: () => ({ input: { hostId: MISSING, revision: 0, objects: [] } }),
  },
  createIpPool: {
    ValidationError: () => ({ input: { ...newPool, cidr: '10.99.0.0/33' } }),
    ForbiddenError: (w) => ({ client: w.tenant, input: newPool }),
    NotFoundError: () => ({ input: { ...newPool, hostId: MISSING } }),
    ConflictError: () => ({ input: { ...newPool, network: 'br0', cidr: '10.20.0.128/25' } }),
  },
  updateIpPool: {
    ValidationError: (w) => ({ input: { poolId: w.poolId, name: '' } }),
    ForbiddenError: (w) => ({ client: w.tenant, input: { poolId: w.poolId, name: 'mine' } }),
    NotFoundError: () => ({ input: { poolId: MISSING } }),
    ConflictError: (w) => ({ input: { poolId: w.tinyPoolId, name: 'p4' } }),
  },
  deleteIpPool: {
    ValidationError: () => ({ input: { poolId: BAD_ID } }),
    ForbiddenError: (w) => ({ client: w.tenant, input: { poolId: w.poolId } }),
    NotFoundError: () => ({ input: { poolId: MISSING } }),
    ConflictError: (w) => ({ input: { poolId: w.poolId } }),
  },
  reserveAddress: {
    ValidationError: (w) => ({ input: { poolId: w.poolId, address: '10.21.0.5' } }),
    ForbiddenError: (w) => ({ client: w.tenant, input: { poolId: w.poolId, address: '10.20.0.50' } }),
    NotFoundError: () => ({ input: { poolId: MISSING, address: '10.20.0.50' } }),
    // the VM's address (the gateway 10.20.0.1 can be reserved: it takes the note)
    AddressInUseError: (w) => ({ input: { poolId: w.poolId, address: '10.20.0.10' } }),
  },
  unreserveAddress: {
    ValidationError: () => ({ input: { reservationId: BAD_ID } }),
    ForbiddenError: (w) => ({ client: w.tenant, input: { reservationId: w.gatewayEntryId } }),
    NotFoundError: () => ({ input: { reservationId: MISSING } }),
    ConflictError: (w) => ({ input: { reservationId: w.gatewayEntryId } }),
  },
  allocateAddress: {
    ValidationError: (w) => ({ client: w.tenant, input: { nicId: w.nicId, idempotencyKey: '' } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { nicId: MISSING } }),
    ConflictError: (w) => ({ client: w.tenant, input: { nicId: w.nicId, idempotencyKey: 'fill-1' } }),
    QuotaExceededError: (w) => ({ client: w.noip, input: { nicId: w.noipNicId } }),
    PoolExhaustedError: (w) => ({ client: w.tenant, input: { nicId: w.tinyNicId } }),
  },
  assignAddress: {
    ValidationError: (w) => ({ client: w.tenant, input: { nicId: w.nicId, address: '10.21.0.5' } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { nicId: MISSING, address: '10.20.0.50' } }),
    QuotaExceededError: (w) => ({ client: w.noip, input: { nicId: w.noipNicId, address: '10.20.0.60' } }),
    AddressInUseError: (w) => ({ client: w.tenant, input: { nicId: w.nicId, address: '10.20.0.1' } }),
  },
  releaseAddress: {
    ValidationError: () => ({ input: { addressId: BAD_ID } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { addressId: MISSING } }),
    ConflictError: (w) => ({ client: w.tenant, input: { addressId: w.addressId } }),
  },
  createInstance: {
    ValidationError: (w) => ({ input: { hostId: w.hostId, name: '' } }),
    ForbiddenError: (w) => ({ client: w.tenant, input: { hostId: w.hostId, name: 'vm-new' } }),
    NotFoundError: () => ({ input: { hostId: MISSING, name: 'vm-new' } }),
    ConflictError: (w) => ({ input: { hostId: w.hostId, name: 'vm1' } }),
    QuotaExceededError: (w) => ({ input: { hostId: w.hostId, name: 'vm-new', ownerId: w.noipId, nics: [{ network: 'br0' }] } }),
    PoolExhaustedError: (w) => ({ input: { hostId: w.hostId, name: 'vm-new', nics: [{ network: 'br-tiny' }] } }),
    AddressInUseError: (w) => ({ input: { hostId: w.hostId, name: 'vm-new', nics: [{ network: 'br0', addresses: ['10.20.0.10'] }] } }),
    CapabilityNotSupportedError: (w) => ({
      input: {
        hostId: w.capsHostId,
        name: 'vm-new',
        nics: [
          { network: 'br0', allocate: [] },
          { network: 'br-tiny', allocate: [] },
        ],
      },
    }),
  },
  deleteInstance: {
    ValidationError: () => ({ input: { instanceId: BAD_ID } }),
    ForbiddenError: (w) => ({ client: w.tenant, input: { instanceId: w.vmId } }),
    NotFoundError: () => ({ input: { instanceId: MISSING } }),
  },
  addNic: {
    ValidationError: (w) => ({ client: w.tenant, input: { instanceId: w.vmId, network: 'br0', name: 'Not A Name' } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { instanceId: MISSING, network: 'br0' } }),
    ConflictError: (w) => ({ client: w.tenant, input: { instanceId: w.vmId, network: 'br0', name: 'eth0', allocate: [] } }),
    QuotaExceededError: (w) => ({ client: w.noip, input: { instanceId: w.noipVmId, network: 'br0' } }),
    PoolExhaustedError: (w) => ({ client: w.tenant, input: { instanceId: w.vmId, network: 'br-tiny' } }),
    AddressInUseError: (w) => ({ client: w.tenant, input: { instanceId: w.vmId, network: 'br0', addresses: ['10.20.0.1'] } }),
    CapabilityNotSupportedError: (w) => ({ client: w.tenant, input: { instanceId: w.capsVmId, network: 'br0', allocate: [] } }),
  },
  removeNic: {
    ValidationError: () => ({ input: { nicId: BAD_ID } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { nicId: MISSING } }),
  },
  createPortForward: {
    ValidationError: (w) => ({ client: w.tenant, input: { instanceId: w.vmId, protocol: 'TCP', targetPort: '0' } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { instanceId: MISSING, protocol: 'TCP', targetPort: '22' } }),
    ConflictError: (w) => ({ input: { instanceId: w.tightVmId, protocol: 'TCP', targetPort: '22' } }),
    QuotaExceededError: (w) => ({ client: w.zero, input: { instanceId: w.zeroVmId, protocol: 'TCP', hostPort: '2600', targetPort: '22' } }),
    PortConflictError: (w) => ({ client: w.tenant, input: { instanceId: w.vmId, protocol: 'TCP', hostPort: '2222', targetPort: '22' } }),
    CapabilityNotSupportedError: (w) => ({ client: w.tenant, input: { instanceId: w.capsVmId, protocol: 'UDP', targetPort: '53' } }),
  },
  updatePortForward: {
    ValidationError: (w) => ({ client: w.tenant, input: { portForwardId: w.forwardId, targetPort: '0' } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { portForwardId: MISSING, note: 'x' } }),
    QuotaExceededError: (w) => ({ client: w.small, input: { portForwardId: w.smallForwardId, protocol: 'BOTH' } }),
    PortConflictError: (w) => ({ client: w.tenant, input: { portForwardId: w.forwardId, hostPort: '2400' } }),
    CapabilityNotSupportedError: (w) => ({ client: w.tenant, input: { portForwardId: w.capsForwardId, protocol: 'UDP' } }),
  },
  diagnosePortForward: {
    ValidationError: (w) => ({ client: w.tenant, input: { portForwardId: w.forwardId, sourceAddress: 'not-an-address' } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { portForwardId: MISSING } }),
    // no agent is connected in this world
    ConflictError: (w) => ({ client: w.tenant, input: { portForwardId: w.forwardId } }),
  },
  reportPortForwardDiagnosis: {
    ValidationError: () => ({ input: { hostId: BAD_ID, requestId: 'x' } }),
    ForbiddenError: (w) => ({ input: { hostId: w.hostId, requestId: 'x' } }),
  },
  deletePortForward: {
    ValidationError: () => ({ input: { portForwardId: BAD_ID } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { portForwardId: MISSING } }),
  },
  importPortForwards: {
    ValidationError: (w) => ({ input: { hostId: w.hostId, csv: '' } }),
    NotFoundError: () => ({ input: { hostId: MISSING, csv: `${HEADER}\n` } }),
    QuotaExceededError: (w) => ({ input: { hostId: w.hostId, csv: `${HEADER}\ntcp,2700,10.20.0.20,22,over quota\n` } }),
  },
  addFirewallRule: {
    ValidationError: (w) => ({ client: w.tenant, input: { instanceId: w.vmId, ...rule, protocol: 'ICMP' } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { instanceId: MISSING, ...rule } }),
    CapabilityNotSupportedError: (w) => ({ client: w.tenant, input: { instanceId: w.capsVmId, ...rule } }),
  },
  updateFirewallRule: {
    ValidationError: (w) => ({ client: w.tenant, input: { ruleId: w.ruleId, priority: 0 } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { ruleId: MISSING } }),
    CapabilityNotSupportedError: (w) => ({ client: w.tenant, input: { ruleId: w.capsRuleId, action: 'DROP' } }),
  },
  deleteFirewallRule: {
    ValidationError: () => ({ input: { ruleId: BAD_ID } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { ruleId: MISSING } }),
  },
  setFirewallPolicy: {
    ValidationError: () => ({ input: { instanceId: BAD_ID } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { instanceId: MISSING, inbound: 'DROP' } }),
    CapabilityNotSupportedError: (w) => ({ client: w.tenant, input: { instanceId: w.capsVmId, outbound: 'DROP' } }),
  },
  applyFirewallTemplate: {
    ValidationError: (w) => ({ client: w.tenant, input: { instanceId: w.vmId, templateId: 'builtin:database' } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { instanceId: w.vmId, templateId: MISSING } }),
    CapabilityNotSupportedError: (w) => ({ client: w.tenant, input: { instanceId: w.capsVmId, templateId: w.firewallTemplateId } }),
  },
  saveFirewallTemplate: {
    ValidationError: (w) => ({ client: w.tenant, input: { instanceId: w.vmId, name: '' } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { instanceId: MISSING, name: 'tpl-2' } }),
    ConflictError: (w) => ({ client: w.tenant, input: { instanceId: w.vmId, name: 'tpl' } }),
  },
  deleteFirewallTemplate: {
    ValidationError: () => ({ input: { templateId: BAD_ID } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { templateId: MISSING } }),
  },
  setBandwidthLimit: {
    ValidationError: (w) => ({ client: w.tenant, input: { instanceId: w.vmId, egressMbps: -1 } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { instanceId: MISSING, egressMbps: 10 } }),
    CapabilityNotSupportedError: (w) => ({ client: w.tenant, input: { instanceId: w.capsVmId, ingressMbps: 10 } }),
  },
  removeBandwidthLimit: {
    ValidationError: () => ({ input: { instanceId: BAD_ID } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { instanceId: MISSING } }),
  },
  createWebProxy: {
    ValidationError: (w) => ({ client: w.tenant, input: { instanceId: w.vmId, domain: 'not a domain', targetPort: 80 } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { instanceId: MISSING, domain: 'new.example.com', targetPort: 80 } }),
    ConflictError: (w) => ({ client: w.tenant, input: { instanceId: w.vmId, domain: 'app.example.com', targetPort: 80, tlsMode: 'NONE' } }),
    QuotaExceededError: (w) => ({ client: w.zero, input: { instanceId: w.zeroVmId, domain: 'zero.example.com', targetPort: 80 } }),
  },
  updateWebProxy: {
    ValidationError: (w) => ({ client: w.tenant, input: { webProxyId: w.webProxyId, targetPort: 0 } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { webProxyId: MISSING, targetPort: 81 } }),
    ConflictError: (w) => ({ client: w.tenant, input: { webProxyId: w.webProxyId, domain: 'app2.example.com' } }),
  },
  deleteWebProxy: {
    ValidationError: () => ({ input: { webProxyId: BAD_ID } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { webProxyId: MISSING } }),
  },
  createProxyDomainTemplate: {
    ValidationError: (w) => ({ client: w.tenant, input: { pattern: 'plain.example.com', targetPort: 80 } }),
    ConflictError: (w) => ({ client: w.zero, input: { pattern: '*.tenant.example.com', targetPort: 80 } }),
  },
  deleteProxyDomainTemplate: {
    ValidationError: () => ({ input: { templateId: BAD_ID } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { templateId: MISSING } }),
  },
  diagnoseWebProxy: {
    // this controller drives no reverse proxy, so a proxy it knows cannot be diagnosed
    ValidationError: (w) => ({ client: w.tenant, input: { webProxyId: w.webProxyId } }),
    NotFoundError: (w) => ({ client: w.tenant, input: { webProxyId: MISSING } }),
  },
  renewCertificates: {
    ValidationError: () => ({ input: { withinDays: 0 } }),
    ForbiddenError: (w) => ({ client: w.tenant, input: { withinDays: 30 } }),
  },
};

const schema = gatehouseSchema();
const mutations = schema.getMutationType()!.getFields();

/** The error types in a mutation's result union (its members but the payload). */
function unionErrors(field: GraphQLField<unknown, unknown>): string[] {
  const union = getNamedType(field.type);
  if (!isUnionType(union)) return [];
  return union
    .getTypes()
    .map((t) => t.name)
    .filter((name) => name !== `${field.name[0]!.toUpperCase()}${field.name.slice(1)}Payload`)
    .sort();
}

/** The error classes the mutation declares (the errors plugin keeps them on the field). */
function declaredErrors(field: GraphQLField<unknown, unknown>): string[] {
  return ((field.extensions as { pothosErrors?: { name: string }[] }).pothosErrors ?? []).map((c) => c.name).sort();
}

/** Each error class's code, as a client sees it. */
const CODES = new Map(
  ERROR_CLASSES.map((C) => [C.name, new (C as unknown as new (...args: unknown[]) => { code: string })('input.x', 1, 1, 'input.x', 'v').code]),
);

/** Sends `input` to a mutation and returns its result (typename and error fields). */
async function send(client: Client, mutation: string, input: Input | undefined) {
  const field = mutations[mutation]!;
  const arg = field.args.find((a) => a.name === 'input');
  const selection = `{ __typename ... on Error { code message field value } }`;
  // signOut takes no input
  if (!arg) return client(`mutation { ${mutation} ${selection} }`, {});
  return client(`mutation($input: ${arg.type.toString()}) { ${mutation}(input: $input) ${selection} }`, { input });
}

/** Runs a mutation that must succeed and returns its payload. */
async function ok(client: Client, mutation: string, input: Input, selection: string): Promise<any> {
  const field = mutations[mutation]!;
  const payload = `${mutation[0]!.toUpperCase()}${mutation.slice(1)}Payload`;
  const arg = field.args.find((a) => a.name === 'input')!;
  const r = await client(
    `mutation($input: ${arg.type.toString()}) { ${mutation}(input: $input) { __typename ... on ${payload} { ${selection} } ... on Error { code message } } }`,
    {
      input,
    },
  );
  const result = r.data?.[mutation];
  if (result?.__typename !== payload) throw new Error(`${mutation} failed: ${JSON.stringify(r)}`);
  return result;
}

async function buildWorld(api: TestApi): Promise<World> {
  const { admin } = api;
  const tenant = await api.tenant('tenant');
  await ok(tenant.client, 'addSshKey', { publicKey: TENANT_SSH_KEY }, 'sshKey { id }');
  const zero = await api.tenant('zero', { quotaPortForwards: 0, quotaForwardedPorts: 0, quotaWebProxies: 0 });
  const noip = await api.tenant('noip', { quotaIpv4Addresses: 0 });
  const small = await api.tenant('small', { quotaForwardedPorts: 1 });
  const hostId = await createHost(admin, 'h1');
  const tightHostId = (await ok(admin, 'createHost', { name: 'tight', backend: 'LINUX', portRangeStart: 3000, portRangeEnd: 3000 }, 'host { id }')).host.id;
  const poolId = await createPool(admin, { name: 'p4', kind: 'PRIVATE', network: 'br0', cidr: '10.20.0.0/24', gateway: '10.20.0.1' });
  const tinyPoolId = await createPool(admin, { name: 'tiny', kind: 'PRIVATE', network: 'br-tiny', cidr: '10.30.0.0/30' });
  const entries = await admin(`query($id: ID!) { ipPool(id: $id) { entries(kinds: [SYSTEM]) { edges { node { id address } } } } }`, { id: poolId });
  const gatewayEntryId = entries.data.ipPool.entries.edges.map((e: any) => e.node).find((n: any) => n.address === '10.20.0.1').id;

  const instance = async (client: Client, hostOf: string, name: string, ownerId: string | undefined, nics: Input[]) =>
    (await ok(client, 'createInstance', { hostId: hostOf, name, ownerId, nics }, 'instance { id nics { id addresses { id } } }')).instance;
  const vm = await instance(admin, hostId, 'vm1', tenant.id, [
    { network: 'br0', addresses: ['10.20.0.10'] },
    { network: 'br-tiny', allocate: [] },
  ]);
  const zeroVm = await instance(admin, hostId, 'zero-vm', zero.id, [{ network: 'br0', addresses: ['10.20.0.20'] }]);
  const noipVm = await instance(admin, hostId, 'noip-vm', noip.id, [{ network: 'br0', allocate: [] }]);
  const tightVm = await instance(admin, tightHostId, 'tight-vm', undefined, [{ network: 'br0', addresses: ['10.20.0.30'] }]);
  const smallVm = await instance(admin, hostId, 'small-vm', small.id, [{ network: 'br0', addresses: ['10.20.0.70'] }]);
  const tinyNicId = vm.nics[1].id;
  // the /30 has two usable addresses: fill them
  await ok(tenant.client, 'allocateAddress', { nicId: tinyNicId, idempotencyKey: 'fill-1' }, 'address { id }');
  await ok(tenant.client, 'allocateAddress', { nicId: tinyNicId, idempotencyKey: 'fill-2' }, 'address { id }');

  const forward = await ok(
    tenant.client,
    'createPortForward',
    { instanceId: vm.id, protocol: 'TCP', hostPort: '2222', targetPort: '22' },
    'portForward { id }',
  );
  await ok(admin, 'createPortForward', { instanceId: tightVm.id, protocol: 'TCP', targetPort: '22' }, 'portForward { id }');
  const firewallRule = await ok(tenant.client, 'addFirewallRule', { instanceId: vm.id, ...rule }, 'rule { id }');
  const firewallTemplate = await ok(tenant.client, 'saveFirewallTemplate', { instanceId: vm.id, name: 'tpl' }, 'template { id }');
  const smallForward = await ok(small.client, 'createPortForward', { instanceId: smallVm.id, protocol: 'TCP', hostPort: '2400', targetPort: '22' }, 'portForward { id }');
  const proxy = await ok(tenant.client, 'createWebProxy', { instanceId: vm.id, domain: 'app.example.com', targetPort: 80, tlsMode: 'NONE' }, 'webProxy { id }');
  await ok(tenant.client, 'createWebProxy', { instanceId: vm.id, domain: 'app2.example.com', targetPort: 80, tlsMode: 'NONE' }, 'webProxy { id }');
  const domainTemplate = await ok(tenant.client, 'createProxyDomainTemplate', { pattern: '*.tenant.example.com', targetPort: 80 }, 'template { id }');
  // a host whose agent reported a narrow driver, with the tenant's instance and an outbound rule made before the report
  const capsHostId = (await ok(admin, 'createHost', { name: 'caps', backend: 'lxd' }, 'host { id }')).host.id;
  const capsVm = await instance(admin, capsHostId, 'caps-vm', tenant.id, [{ network: 'br0', addresses: ['10.20.0.40'] }]);
  const capsRule = await ok(tenant.client, 'addFirewallRule', { instanceId: capsVm.id, ...rule, direction: 'OUTBOUND' }, 'rule { id }');
  const capsForward = await ok(tenant.client, 'createPortForward', { instanceId: capsVm.id, protocol: 'TCP', targetPort: '22' }, 'portForward { id }');
  await ok(
    admin,
    'reportHostStatus',
    { hostId: capsHostId, ...agentReport, pluginId: 'lxd', driver: { id: 'lxd', version: '0.1.0', apiVersion: 1, capabilities: NARROW } },
    'agent { online }',
  );
  return {
    api,
    tenant: tenant.client,
    tenantId: tenant.id,
    zero: zero.client,
    noip: noip.client,
    noipId: noip.id,
    hostId,
    tightHostId,
    poolId,
    tinyPoolId,
    gatewayEntryId,
    vmId: vm.id,
    nicId: vm.nics[0].id,
    addressId: vm.nics[0].addresses[0].id,
    tinyNicId,
    zeroVmId: zeroVm.id,
    noipVmId: noipVm.id,
    noipNicId: noipVm.nics[0].id,
    tightVmId: tightVm.id,
    capsHostId,
    capsVmId: capsVm.id,
    capsRuleId: capsRule.rule.id,
    forwardId: forward.portForward.id,
    small: small.client,
    smallForwardId: smallForward.portForward.id,
    capsForwardId: capsForward.portForward.id,
    ruleId: firewallRule.rule.id,
    firewallTemplateId: firewallTemplate.template.id,
    webProxyId: proxy.webProxy.id,
    domainTemplateId: domainTemplate.template.id,
  };
}

describe('mutation result unions', () => {
  it('every mutation returns a result union of its payload and exactly the errors it declares', () => {
    for (const field of Object.values(mutations)) {
      expect(isUnionType(getNamedType(field.type)), `${field.name} returns a result union`).toBe(true);
      expect(declaredErrors(field).length, `${field.name} declares its errors`).toBeGreaterThan(0);
      expect(unionErrors(field), field.name).toEqual(declaredErrors(field));
      for (const name of unionErrors(field)) {
        const type = schema.getType(name);
        expect(type && 'getInterfaces' in type && type.getInterfaces().map((i) => i.name), `${name} implements Error`).toContain('Error');
      }
    }
  });

  it('every mutation whose arguments the argument checks inspect declares ValidationError, which they throw', () => {
    const checked = Object.values(mutations).filter((f) => f.args.some((a) => needsCheck(a.type)));
    expect(checked.length).toBeGreaterThan(30);
    for (const field of checked) expect(declaredErrors(field), field.name).toContain('ValidationError');
  });

  it('the table (or the test named for it) drives every (mutation, declared error) pair of the schema, and no other', () => {
    const inSchema = Object.values(mutations).flatMap((f) => unionErrors(f).map((e) => `${f.name} → ${e}`));
    const inTable = [CASES, DRIVEN_ELSEWHERE].flatMap((table) => Object.entries(table).flatMap(([m, errors]) => Object.keys(errors).map((e) => `${m} → ${e}`)));
    expect(inTable.sort()).toEqual(inSchema.sort());
    for (const errors of Object.values(DRIVEN_ELSEWHERE))
      for (const [error, { file, expects }] of Object.entries(errors))
        expect(readFileSync(new URL(file, import.meta.url), 'utf8'), `${file} drives ${error}`).toContain(expects);
  });
});

describe('each declared error of each mutation, through GraphQL', () => {
  let store: Store;
  let world: World;

  beforeAll(async () => {
    store = await openStore({ kind: 'pglite' });
    world = await buildWorld(await createTestApi(store));
  }, 60_000);
  afterAll(async () => store?.close());

  const pairs = Object.entries(CASES).flatMap(([mutation, errors]) => Object.entries(errors).map(([error, request]) => ({ mutation, error, request })));
  it.each(pairs)('$mutation → $error', async ({ mutation, error, request }) => {
    const { client = world.api.admin, input } = request(world);
    const before = await world.api.snapshot();
    const r = await send(client, mutation, input);
    expect(r.errors, JSON.stringify(r.errors)).toBeUndefined();
    expect(r.data![mutation]).toMatchObject({ __typename: error, code: CODES.get(error) });
    expect(r.data![mutation].message).not.toBe('');
    // an expected failure leaves everything as it was
    expect(await world.api.snapshot()).toEqual(before);
  });
});

/** A narrower NOT_FOUND that no mutation declares; it must not pass as its parent NotFoundError. */
class TokenGoneError extends NotFoundError {}

describe('an expected failure a mutation does not declare', () => {
  // revokeApiToken declares ValidationError and NotFoundError only
  it.each([
    { name: "another mutation's error", thrown: () => new PoolExhaustedError('input.tokenId', MISSING, 'p4'), logged: 'PoolExhaustedError (POOL_EXHAUSTED)' },
    { name: 'a subclass of a declared error', thrown: () => new TokenGoneError('input.tokenId', MISSING, 'token'), logged: 'TokenGoneError (NOT_FOUND)' },
  ])('($name) reaches the client as a masked unexpected error and is logged, not as a member of the union', async ({ thrown, logged: expected }) => {
    const store = await openStore({ kind: 'pglite' });
    try {
      const container = createContainer(store);
      const users = container.resolve(UserService);
      users.revokeToken = async () => {
        throw thrown();
      };
      container.registerInstance(UserService, users);
      const logged: string[] = [];
      const yoga = createGatehouseYoga(container, { info: () => {}, warn: () => {}, error: (message) => logged.push(message) });
      const boot = (await users.bootstrapAdmin())!;
      const response = await yoga.fetch('http://gatehouse.test/graphql', {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${boot.secret}` },
        body: JSON.stringify({
          query: `mutation($id: ID!) { revokeApiToken(input: { tokenId: $id }) { __typename ... on Error { code } } }`,
          variables: { id: MISSING },
        }),
      });
      const body = (await response.json()) as { data: unknown; errors: { message: string; extensions: { code: string } }[] };
      expect(body.data).toBeNull();
      expect(body.errors).toHaveLength(1);
      expect(body.errors[0]!.extensions.code).toBe('INTERNAL_SERVER_ERROR');
      expect(body.errors[0]!.message).not.toContain(MISSING);
      expect(logged).toHaveLength(1);
      expect(logged[0]).toContain(`UndeclaredError: revokeApiToken threw ${expected}`);
    } finally {
      await store.close();
    }
  });
});
