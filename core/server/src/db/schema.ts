/**
 * The controller's tables. drizzle-kit generates the migrations in `drizzle/` from this file;
 * the same migrations run on PGlite and PostgreSQL.
 *
 * Invariants the database itself enforces (so they hold across controller replicas):
 * - an address or delegated prefix is allocated at most once per pool: unique (pool_id, slot);
 * - a retried allocation with the same idempotency key finds the first one: unique (owner_id, idempotency_key);
 * - no user holds more addresses than their quota: address_usage.used, incremented only while below it;
 * - a MAC address exists once: unique (mac);
 * - an address cannot be released by deleting its NIC behind the service's back: nic_id is `restrict`.
 */
import { sql, type SQL } from 'drizzle-orm';
import type { DesiredRateLimit, DriverCapabilities } from '@gatehouse/sdk';
import type { AgentStartSource } from '@gatehouse/agent-protocol';
import {
  bigint,
  boolean,
  check,
  index,
  integer,
  jsonb,
  numeric,
  pgTable,
  primaryKey,
  text,
  timestamp,
  unique,
  uuid,
  type AnyPgColumn,
} from 'drizzle-orm/pg-core';

const createdAt = () => timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow();

/** What the host's agent last reported for an object it applies; every change resets it to pending. */
const applyStatusColumns = () => ({
  status: text('status', { enum: ['pending', 'applied', 'failed', 'drifted'] })
    .notNull()
    .default('pending'),
  statusError: text('status_error'),
});

/**
 * The host's desired revision in which an object was created or last changed (set in the same
 * transaction as the revision bump): a status report for an older revision describes an older
 * version of the object and is skipped for it.
 */
const changedRevisionColumn = () => bigint('changed_revision', { mode: 'number' }).notNull().default(0);

/** People and systems that own things; `role` decides what their tokens may do. */
export const users = pgTable('users', {
  id: uuid('id').primaryKey(),
  name: text('name').notNull().unique('users_name_unique'),
  role: text('role', { enum: ['admin', 'user'] }).notNull(),
  /** Maximum IPv4 addresses the user may hold; null means unlimited. */
  quotaIpv4Addresses: integer('quota_ipv4_addresses'),
  /** Maximum IPv6 addresses or delegated prefixes the user may hold; null means unlimited. */
  quotaIpv6Prefixes: integer('quota_ipv6_prefixes'),
  /** Maximum port forwards the user may have; null means unlimited. */
  quotaPortForwards: integer('quota_port_forwards'),
  /** Maximum web proxies the user may have; null means unlimited. */
  quotaWebProxies: integer('quota_web_proxies'),
  /** Host ports held by the user's forwards, per protocol (100 ports on tcp+udp count 200); null: unlimited. */
  quotaForwardedPorts: integer('quota_forwarded_ports'),
  /** scrypt hash of the sign-in password (`scrypt$N$r$p$salt$hash`); null: the user cannot sign in with a password. */
  passwordHash: text('password_hash'),
  /** Day of the month (1-28) the user's traffic billing periods start on (UTC); null: calendar months. */
  billingDay: integer('billing_day'),
  /** Whether the user's web terminals are recorded (asciicast v2); an admin switches it, off by default. */
  terminalRecording: boolean('terminal_recording').notNull().default(false),
  createdAt: createdAt(),
});

/** API tokens; only a SHA-256 hash of the secret is stored. */
export const apiTokens = pgTable('api_tokens', {
  id: uuid('id').primaryKey(),
  userId: uuid('user_id')
    .notNull()
    .references(() => users.id, { onDelete: 'cascade' }),
  name: text('name').notNull(),
  scope: text('scope', { enum: ['admin', 'user', 'agent'] }).notNull(),
  /** `api`: created for automation, valid until revoked. `session`: issued by signIn, valid until `expiresAt` or signOut. */
  kind: text('kind', { enum: ['api', 'session'] })
    .notNull()
    .default('api'),
  /** Sessions expire; API tokens have no expiry (null). */
  expiresAt: timestamp('expires_at', { withTimezone: true, mode: 'date' }),
  /** Agent tokens act for exactly this host. */
  hostId: uuid('host_id').references(() => hosts.id, { onDelete: 'cascade' }),
  secretHash: text('secret_hash').notNull().unique('api_tokens_secret_hash_unique'),
  /** The first characters of the token, to recognise it in listings. */
  prefix: text('prefix').notNull(),
  createdAt: createdAt(),
  lastUsedAt: timestamp('last_used_at', { withTimezone: true, mode: 'date' }),
  revokedAt: timestamp('revoked_at', { withTimezone: true, mode: 'date' }),
});

/** The plugin a host's agent runs and what it can do, as the agent last reported it. */
export interface HostDriverJson {
  id: string;
  version: string | null;
  apiVersion: number;
  capabilities: DriverCapabilities;
}

/** A hypervisor host or gateway that an agent manages. */
export const hosts = pgTable(
  'hosts',
  {
    id: uuid('id').primaryKey(),
    name: text('name').notNull().unique('hosts_name_unique'),
    /** The id of the plugin the host's agent runs (`linux`, `docker`, `lxd`, `proxmox`, `esxi` or a third party's). */
    backend: text('backend').notNull(),
    /**
     * The driver the host's agent reported (id, version, capabilities); null until an agent
     * connected. Objects it cannot apply are refused; rewritten only when it changes.
     */
    driver: jsonb('driver').$type<HostDriverJson>(),
    portRangeStart: integer('port_range_start').notNull(),
    portRangeEnd: integer('port_range_end').notNull(),
    /** Host ports never handed out: `[{start, end}]`, inclusive. */
    reservedPorts: jsonb('reserved_ports').$type<{ start: number; end: number }[]>().notNull(),
    /** Most host ports one forward of a non-admin user may span on this host (a range's width). */
    maxForwardPorts: integer('max_forward_ports').notNull().default(1000),
    /** Public addresses of the host, canonical spelling. */
    publicAddresses: jsonb('public_addresses').$type<string[]>().notNull(),
    /** Bumped in the same transaction as every change to what the host must apply. */
    desiredRevision: bigint('desired_revision', { mode: 'number' }).notNull().default(0),
    /**
     * Where a discovered instance's NIC gets an address when none of its own lies in a pool (an
     * ip_pools id, checked by the service; no foreign key, pools already reference hosts).
     */
    defaultPoolId: uuid('default_pool_id'),
    /** Who owns instances registered from the agent's discovery; null: the first admin. */
    discoveryOwnerId: uuid('discovery_owner_id').references(() => users.id, { onDelete: 'set null' }),
    /** Fastest rate a counter of this host can grow at, bits per second; a larger delta is discarded (null: 100 Gbit/s). */
    trafficCapBps: bigint('traffic_cap_bps', { mode: 'number' }),
    createdAt: createdAt(),
  },
  (t) => [
    check('hosts_port_range_check', sql`${t.portRangeStart} between 1 and ${t.portRangeEnd} and ${t.portRangeEnd} <= 65535`),
    check('hosts_max_forward_ports_check', sql`${t.maxForwardPorts} between 1 and 65535`),
  ],
);

/** A VM or container on a host, owned by one user. */
export const instances = pgTable(
  'instances',
  {
    id: uuid('id').primaryKey(),
    hostId: uuid('host_id')
      .notNull()
      .references(() => hosts.id, { onDelete: 'restrict' }),
    ownerId: uuid('owner_id')
      .notNull()
      .references(() => users.id, { onDelete: 'restrict' }),
    name: text('name').notNull(),
    /** The backend's own id (container id, VMID, moref); null until discovered. */
    externalId: text('external_id'),
    /**
     * When the host's agent last listed it in a discovery. An instance once seen and then missing
     * from a discovery was deleted on the backend, and is reclaimed; one never seen is left alone.
     */
    lastDiscoveredAt: timestamp('last_discovered_at', { withTimezone: true, mode: 'date' }),
    /** What the firewall does with traffic no rule matched. */
    firewallInboundPolicy: text('firewall_inbound_policy', { enum: ['allow', 'reject', 'drop'] })
      .notNull()
      .default('allow'),
    firewallOutboundPolicy: text('firewall_outbound_policy', { enum: ['allow', 'reject', 'drop'] })
      .notNull()
      .default('allow'),
    createdAt: createdAt(),
  },
  (t) => [unique('instances_host_name_unique').on(t.hostId, t.name), index('instances_owner_idx').on(t.ownerId)],
);

/** A network interface of an instance. */
export const nics = pgTable(
  'nics',
  {
    id: uuid('id').primaryKey(),
    instanceId: uuid('instance_id')
      .notNull()
      .references(() => instances.id, { onDelete: 'cascade' }),
    name: text('name').notNull(),
    mac: text('mac').notNull().unique('nics_mac_unique'),
    /** Bridge or network the NIC is attached to; pools bind to the same name. */
    network: text('network').notNull(),
    /** Client-chosen key: retrying addNic with it returns this NIC instead of adding another. */
    idempotencyKey: text('idempotency_key'),
    /** What the host's agent reported for the NIC (created or configured on the backend). */
    ...applyStatusColumns(),
    changedRevision: changedRevisionColumn(),
    createdAt: createdAt(),
  },
  (t) => [unique('nics_instance_name_unique').on(t.instanceId, t.name), unique('nics_instance_key_unique').on(t.instanceId, t.idempotencyKey)],
);

/** A range of addresses (or IPv6 prefixes) handed out on one network. */
export const ipPools = pgTable(
  'ip_pools',
  {
    id: uuid('id').primaryKey(),
    name: text('name').notNull().unique('ip_pools_name_unique'),
    kind: text('kind', { enum: ['public', 'private'] }).notNull(),
    network: text('network').notNull(),
    family: integer('family').notNull(),
    /** The subnet, canonical `address/length`. */
    subnet: text('subnet').notNull(),
    rangeStart: text('range_start').notNull(),
    rangeEnd: text('range_end').notNull(),
    gateway: text('gateway'),
    dns: jsonb('dns').$type<string[]>().notNull(),
    /** Null: global pool. */
    hostId: uuid('host_id').references(() => hosts.id, { onDelete: 'restrict' }),
    /** IPv6 only: hand out prefixes of this length instead of single addresses. */
    delegatedPrefixLength: integer('delegated_prefix_length'),
    /** Every slot below this one is taken: the lowest-free search starts here. Maintained under the pool's row lock. */
    freeSlotHint: numeric('free_slot_hint', { precision: 40, scale: 0, mode: 'string' }).notNull().default('0'),
    createdAt: createdAt(),
  },
  (t) => [check('ip_pools_family_check', sql`${t.family} in (4, 6)`), index('ip_pools_network_idx').on(t.network)],
);

/** Every taken slot of a pool: an allocation to a NIC, an operator reservation, or a system reservation. */
export const ipAllocations = pgTable(
  'ip_allocations',
  {
    id: uuid('id').primaryKey(),
    poolId: uuid('pool_id')
      .notNull()
      .references(() => ipPools.id, { onDelete: 'restrict' }),
    /** Offset in the pool's range, in units of one address or one delegated prefix. */
    slot: numeric('slot', { precision: 40, scale: 0, mode: 'string' }).notNull(),
    address: text('address').notNull(),
    prefixLength: integer('prefix_length').notNull(),
    kind: text('kind', { enum: ['allocated', 'reserved', 'system'] }).notNull(),
    nicId: uuid('nic_id').references(() => nics.id, { onDelete: 'restrict' }),
    ownerId: uuid('owner_id').references(() => users.id, { onDelete: 'restrict' }),
    note: text('note').notNull().default(''),
    idempotencyKey: text('idempotency_key'),
    createdAt: createdAt(),
  },
  (t) => [
    unique('ip_allocations_pool_slot_unique').on(t.poolId, t.slot),
    unique('ip_allocations_owner_key_unique').on(t.ownerId, t.idempotencyKey),
    index('ip_allocations_nic_idx').on(t.nicId),
    index('ip_allocations_owner_idx').on(t.ownerId),
    check('ip_allocations_nic_check', sql`(${t.kind} = 'allocated') = (${t.nicId} is not null)`),
  ],
);

/**
 * Addresses (IPv4) and addresses or delegated prefixes (IPv6) each user holds, kept in the same
 * transaction as every allocation and release. A quota is checked by one conditional increment
 * (`used < quota`) of this row instead of counting the user's allocations under a lock on the user,
 * so allocations do not serialise on the user row and the check costs the same at any size.
 */
export const addressUsage = pgTable(
  'address_usage',
  {
    ownerId: uuid('owner_id')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    family: integer('family').notNull(),
    used: integer('used').notNull().default(0),
  },
  (t) => [
    primaryKey({ columns: [t.ownerId, t.family] }),
    check('address_usage_family_check', sql`${t.family} in (4, 6)`),
    check('address_usage_used_check', sql`${t.used} >= 0`),
  ],
);

/** One row per change made through the API. */
export const auditLog = pgTable(
  'audit_log',
  {
    id: uuid('id').primaryKey(),
    at: timestamp('at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
    requestId: text('request_id').notNull(),
    actorUserId: uuid('actor_user_id'),
    tokenId: uuid('token_id'),
    action: text('action').notNull(),
    objectType: text('object_type').notNull(),
    objectId: text('object_id').notNull(),
    /** The user the object belongs to, so tenants can read their own history. */
    ownerId: uuid('owner_id'),
    before: jsonb('before'),
    after: jsonb('after'),
    /** The import whose forward the entry records; hidden with that forward while the import is staged. */
    importId: uuid('import_id'),
  },
  (t) => [
    index('audit_log_owner_idx').on(t.ownerId, t.id),
    index('audit_log_object_idx').on(t.objectType, t.objectId),
    index('audit_log_import_idx').on(t.importId),
  ],
);

/**
 * The objects an agent's status report changed, beside the report's `host.statusReport` audit
 * entry (`audit_id`): their ids by object type and new status, written by the statement that
 * changed them (a report of 10,000 objects lists 10,000 ids: as a JSON array in the entry they
 * were built and parsed in JavaScript, stored as jsonb and read back by every replica, since the
 * entry no longer fitted a NOTIFY). Written in the entry's transaction, just before the entry
 * (hence no foreign key: the entry's row does not exist yet when the ids are written).
 */
export const auditStatusObjects = pgTable(
  'audit_status_objects',
  {
    auditId: uuid('audit_id').notNull(),
    objectType: text('object_type').notNull(),
    status: text('status').notNull(),
    objectIds: uuid('object_ids').array().notNull(),
  },
  (t) => [primaryKey({ columns: [t.auditId, t.objectType, t.status] })],
);

/**
 * A NAT port forward: host port (range) on one or all public addresses of a host, to an address
 * of an instance NIC on that host. Overlaps are excluded by the database (see the migration
 * `port_forward_exclusion`): on one host, two forwards may not share a protocol, an address and a
 * port, where "all addresses" overlaps every address and "both" overlaps TCP and UDP.
 */
/** A balanced forward's targets as stored: instances of the forward's owner on its host, each address by its allocation. */
export interface ForwardBalanceJson {
  sourceAffinity: boolean;
  /** In the order given; the forward's own target (instanceId, targetAddressId) is one of them. */
  targets: { instanceId: string; addressId: string; address: string; weight: number }[];
}

export const portForwards = pgTable(
  'port_forwards',
  {
    id: uuid('id').primaryKey(),
    hostId: uuid('host_id')
      .notNull()
      .references(() => hosts.id, { onDelete: 'restrict' }),
    instanceId: uuid('instance_id')
      .notNull()
      .references(() => instances.id, { onDelete: 'restrict' }),
    ownerId: uuid('owner_id')
      .notNull()
      .references(() => users.id, { onDelete: 'restrict' }),
    protocol: text('protocol', { enum: ['tcp', 'udp', 'both'] }).notNull(),
    /** Null: every public address of the host. */
    hostAddress: text('host_address'),
    hostPortStart: integer('host_port_start').notNull(),
    hostPortEnd: integer('host_port_end').notNull(),
    targetAddressId: uuid('target_address_id')
      .notNull()
      .references(() => ipAllocations.id, { onDelete: 'restrict' }),
    targetAddress: text('target_address').notNull(),
    targetPortStart: integer('target_port_start').notNull(),
    /** Source prefixes allowed to use the forward; empty: any. */
    sourceCidrs: jsonb('source_cidrs').$type<string[]>().notNull(),
    /** New-connection rate limits (per source, overall, burst, action); null: none. */
    rateLimit: jsonb('rate_limit').$type<DesiredRateLimit>(),
    /** New connections the forward's rate limits refused since `rateLimitedSince` (summed over the agent's counter lives). */
    rateLimitedConnections: bigint('rate_limited_connections', { mode: 'number' }).notNull().default(0),
    /** When the agent first reported the forward's rate-limit counter; null: never. */
    rateLimitedSince: timestamp('rate_limited_since', { withTimezone: true, mode: 'date' }),
    /** The agent's last raw reading of that counter and its epoch (a new epoch or a smaller value: it restarted). */
    rateLimitedEpoch: text('rate_limited_epoch'),
    rateLimitedRaw: bigint('rate_limited_raw', { mode: 'number' }),
    /** Several targets balanced per connection (the forward's own target among them); null: the target alone. */
    balance: jsonb('balance').$type<ForwardBalanceJson>(),
    note: text('note').notNull().default(''),
    ...applyStatusColumns(),
    changedRevision: changedRevisionColumn(),
    /** Exclusion-constraint keys: protocol as 1 (tcp) .. 2 (udp), the address as a number in the IPv6 space. */
    protoLo: integer('proto_lo').notNull(),
    protoHi: integer('proto_hi').notNull(),
    addrLo: numeric('addr_lo', { precision: 40, scale: 0, mode: 'string' }).notNull(),
    addrHi: numeric('addr_hi', { precision: 40, scale: 0, mode: 'string' }).notNull(),
    /** The import that wrote the row; while that import is staged the row holds its ports but is not there for anyone else. */
    importId: uuid('import_id'),
    createdAt: createdAt(),
  },
  (t) => [
    index('port_forwards_instance_idx').on(t.instanceId),
    index('port_forwards_import_idx').on(t.importId),
    index('port_forwards_owner_idx').on(t.ownerId),
    index('port_forwards_target_idx').on(t.targetAddressId),
    // what a desired-state stream reads for each new revision: the host's forwards changed since the last one it sent
    index('port_forwards_host_revision_idx').on(t.hostId, t.changedRevision),
    check(
      'port_forwards_ports_check',
      sql`${t.hostPortStart} between 1 and ${t.hostPortEnd} and ${t.hostPortEnd} <= 65535 and ${t.targetPortStart} between 1 and 65535 and ${t.targetPortStart} + (${t.hostPortEnd} - ${t.hostPortStart}) <= 65535`,
    ),
  ],
);

/**
 * Tombstones of deleted port forwards: the host, the forward and the host's desired revision in
 * the deleting transaction (which bumps it first). Written by a statement trigger on
 * `port_forwards` (migration forward_removals), so every way a forward goes (deletePortForward,
 * its instance or NIC removed, an import rolled back) leaves one; read by the desired-state
 * streams, which send a deletion as a patch instead of reading the host's whole state again. The
 * trigger drops a host's tombstones older than an hour; a stream that missed one reads the whole
 * state (its forward count does not add up).
 */
export const portForwardRemovals = pgTable(
  'port_forward_removals',
  {
    hostId: uuid('host_id').notNull(),
    forwardId: uuid('forward_id').notNull(),
    revision: bigint('revision', { mode: 'number' }).notNull(),
    removedAt: timestamp('removed_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.hostId, t.revision, t.forwardId] })],
);

/**
 * A CSV import of port forwards. A large import writes its forwards in short transactions while
 * `staged`, so it never holds the store for long; its rows hold their host ports (the exclusion
 * constraint sees them) but every reader skips them (`forwardIsVisible`) until one commit sets
 * `committed`. A staged import that fails, or that a stopped controller left behind, is removed
 * with its rows: an import is all or nothing.
 */
export const portForwardImports = pgTable('port_forward_imports', {
  id: uuid('id').primaryKey(),
  hostId: uuid('host_id')
    .notNull()
    .references(() => hosts.id, { onDelete: 'cascade' }),
  actorUserId: uuid('actor_user_id'),
  /** `removing`: failed or left over, its rows are being deleted (still hidden, no longer reserved). */
  state: text('state', { enum: ['staged', 'committed', 'removing'] }).notNull(),
  /** Forwards the import writes. */
  forwards: integer('forwards').notNull(),
  /** Forwards and host ports per owner, counted against their quotas while staged. */
  reserved: jsonb('reserved').$type<Record<string, { forwards: number; ports: number }>>().notNull(),
  /** Refreshed by every staging transaction; a staged import untouched for long belongs to a stopped controller. */
  touchedAt: timestamp('touched_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  createdAt: createdAt(),
});

/** Whether a row an import may have written (its `import_id` column) is there for readers: not of an import still staged or being removed. */
function notStaged(importId: AnyPgColumn): SQL<boolean> {
  return sql<boolean>`(${importId} is null or ${importId} not in (select "id" from "port_forward_imports" where "state" <> 'committed'))`;
}

/**
 * The condition every reader of `port_forwards` applies: the row is not part of an unfinished import.
 * (Writers that need every held port — overlap checks, free-port choice, address release — do not.)
 */
export const forwardIsVisible = notStaged(portForwards.importId);

/** The condition readers of `audit_log` apply: the entry is not about a forward of an unfinished import. */
export const auditEntryIsVisible = notStaged(auditLog.importId);

/** A firewall rule of one instance; rules apply in priority order (lower first, ties by creation). */
export const firewallRules = pgTable(
  'firewall_rules',
  {
    id: uuid('id').primaryKey(),
    instanceId: uuid('instance_id')
      .notNull()
      .references(() => instances.id, { onDelete: 'restrict' }),
    ownerId: uuid('owner_id')
      .notNull()
      .references(() => users.id, { onDelete: 'restrict' }),
    direction: text('direction', { enum: ['inbound', 'outbound'] }).notNull(),
    protocol: text('protocol', { enum: ['tcp', 'udp', 'icmp', 'all'] }).notNull(),
    /** Canonical prefix, or null for any. */
    sourceCidr: text('source_cidr'),
    destinationCidr: text('destination_cidr'),
    /** Destination ports for tcp/udp; empty: every port. */
    ports: jsonb('ports').$type<{ start: number; end: number }[]>().notNull(),
    action: text('action', { enum: ['allow', 'reject', 'drop'] }).notNull(),
    priority: integer('priority').notNull(),
    enabled: boolean('enabled').notNull().default(true),
    note: text('note').notNull().default(''),
    ...applyStatusColumns(),
    changedRevision: changedRevisionColumn(),
    createdAt: createdAt(),
  },
  (t) => [
    index('firewall_rules_instance_idx').on(t.instanceId, t.direction, t.priority, t.id),
    check('firewall_rules_priority_check', sql`${t.priority} between 1 and 10000`),
  ],
);

/** A user's own firewall template: rules to stamp onto an instance. */
export const firewallTemplates = pgTable(
  'firewall_templates',
  {
    id: uuid('id').primaryKey(),
    ownerId: uuid('owner_id')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    name: text('name').notNull(),
    inboundPolicy: text('inbound_policy', { enum: ['allow', 'reject', 'drop'] }).notNull(),
    outboundPolicy: text('outbound_policy', { enum: ['allow', 'reject', 'drop'] }).notNull(),
    rules: jsonb('rules').$type<FirewallRuleSpecJson[]>().notNull(),
    createdAt: createdAt(),
  },
  (t) => [unique('firewall_templates_owner_name_unique').on(t.ownerId, t.name)],
);

/** A rule as stored in a template. */
export interface FirewallRuleSpecJson {
  direction: 'inbound' | 'outbound';
  protocol: 'tcp' | 'udp' | 'icmp' | 'all';
  sourceCidr: string | null;
  destinationCidr: string | null;
  ports: { start: number; end: number }[];
  action: 'allow' | 'reject' | 'drop';
  priority: number;
  note: string;
}

/**
 * Bandwidth shaping of an instance (nic_id null: every NIC) or of one NIC. Rates are bits per
 * second; a null burst means "automatic" (see `autoBurstBytes`); a monthly traffic quota either
 * throttles to `throttle_bps` or only notifies when exceeded.
 */
export const bandwidthLimits = pgTable(
  'bandwidth_limits',
  {
    id: uuid('id').primaryKey(),
    instanceId: uuid('instance_id')
      .notNull()
      .references(() => instances.id, { onDelete: 'restrict' }),
    nicId: uuid('nic_id').references(() => nics.id, { onDelete: 'restrict' }),
    ownerId: uuid('owner_id')
      .notNull()
      .references(() => users.id, { onDelete: 'restrict' }),
    ingressBps: bigint('ingress_bps', { mode: 'number' }),
    egressBps: bigint('egress_bps', { mode: 'number' }),
    ingressBurstBytes: bigint('ingress_burst_bytes', { mode: 'number' }),
    egressBurstBytes: bigint('egress_burst_bytes', { mode: 'number' }),
    monthlyQuotaBytes: bigint('monthly_quota_bytes', { mode: 'number' }),
    quotaAction: text('quota_action', { enum: ['throttle', 'notify'] }),
    throttleBps: bigint('throttle_bps', { mode: 'number' }),
    ...applyStatusColumns(),
    changedRevision: changedRevisionColumn(),
    createdAt: createdAt(),
  },
  (t) => [unique('bandwidth_limits_target_unique').on(t.instanceId, t.nicId).nullsNotDistinct()],
);

/** A domain served by the reverse proxy (Caddy) and forwarded to an instance address and port. */
export const webProxies = pgTable(
  'web_proxies',
  {
    id: uuid('id').primaryKey(),
    ownerId: uuid('owner_id')
      .notNull()
      .references(() => users.id, { onDelete: 'restrict' }),
    instanceId: uuid('instance_id')
      .notNull()
      .references(() => instances.id, { onDelete: 'restrict' }),
    hostId: uuid('host_id')
      .notNull()
      .references(() => hosts.id, { onDelete: 'restrict' }),
    /** Lower-case ASCII (punycode), no trailing dot; `*.` prefix for a wildcard. */
    domain: text('domain').notNull().unique('web_proxies_domain_unique'),
    targetAddressId: uuid('target_address_id')
      .notNull()
      .references(() => ipAllocations.id, { onDelete: 'restrict' }),
    targetAddress: text('target_address').notNull(),
    targetPort: integer('target_port').notNull(),
    targetProtocol: text('target_protocol', { enum: ['http', 'https'] }).notNull(),
    tlsMode: text('tls_mode', { enum: ['none', 'self_signed', 'uploaded', 'acme'] }).notNull(),
    certificatePem: text('certificate_pem'),
    /** Never returned by any query. */
    privateKeyPem: text('private_key_pem'),
    websocket: boolean('websocket').notNull().default(true),
    ...applyStatusColumns(),
    /** The certificate Caddy serves for the domain, as the controller last saw it over TLS. */
    certIssuer: text('cert_issuer'),
    certNotAfter: timestamp('cert_not_after', { withTimezone: true, mode: 'date' }),
    /** Why the last issuance or check failed (Caddy's message); null when the last check succeeded. */
    certError: text('cert_error'),
    certCheckedAt: timestamp('cert_checked_at', { withTimezone: true, mode: 'date' }),
    /** The controller's last diagnosis of the target (see proxy/probe.ts): ok, instance_stopped, connection_refused … */
    targetState: text('target_state'),
    targetDetail: text('target_detail'),
    targetCheckedAt: timestamp('target_checked_at', { withTimezone: true, mode: 'date' }),
    createdAt: createdAt(),
  },
  (t) => [index('web_proxies_instance_idx').on(t.instanceId), index('web_proxies_target_idx').on(t.targetAddressId)],
);

/** Requests and bytes through each proxy, from Caddy's access log (added up by the controller). */
export const webProxyTraffic = pgTable('web_proxy_traffic', {
  proxyId: uuid('proxy_id')
    .primaryKey()
    .references(() => webProxies.id, { onDelete: 'cascade' }),
  requests: bigint('requests', { mode: 'number' }).notNull().default(0),
  /** Response bodies sent to clients. */
  bytesSent: bigint('bytes_sent', { mode: 'number' }).notNull().default(0),
  /** Request bodies received from clients. */
  bytesReceived: bigint('bytes_received', { mode: 'number' }).notNull().default(0),
  /** Responses with status 500–599 (502: the target did not answer). */
  serverErrors: bigint('server_errors', { mode: 'number' }).notNull().default(0),
  lastRequestAt: timestamp('last_request_at', { withTimezone: true, mode: 'date' }),
});

/** A user's wildcard template: `*.user1.example.com` gives each of the user's instances `<name>.user1.example.com`. */
export const proxyDomainTemplates = pgTable('proxy_domain_templates', {
  id: uuid('id').primaryKey(),
  ownerId: uuid('owner_id')
    .notNull()
    .references(() => users.id, { onDelete: 'cascade' }),
  /** The wildcard, e.g. `*.user1.example.com`. */
  pattern: text('pattern').notNull().unique('proxy_domain_templates_pattern_unique'),
  targetPort: integer('target_port').notNull(),
  targetProtocol: text('target_protocol', { enum: ['http', 'https'] }).notNull(),
  createdAt: createdAt(),
});

/** An instance as a host agent discovered it on its host (the backend's view, not Gatehouse's). */
/** A socket listening on a host, as its agent reported it (the port audit). */
export interface ListeningSocketJson {
  protocol: 'TCP' | 'UDP';
  /** Canonical; `0.0.0.0` or `::` for every address. */
  address: string;
  port: number;
  /** The process holding it, when the agent could read it. */
  process: string | null;
  pid: number | null;
}

export interface DiscoveredInstanceJson {
  /** The backend's own id (container id, VMID, moref, namespace name). */
  externalId: string;
  name: string;
  /** Absent when the plugin does not say. */
  running?: boolean;
  nics: { name: string; mac: string | null; addresses: string[] }[];
}

/**
 * What a host's agent last reported about itself, one row per host that ever had an agent. Kept
 * apart from `hosts`, whose row every desired-state change locks and bumps: the agent writes here
 * every few seconds and must neither wait behind those transactions nor show up in host audit
 * snapshots.
 */
export const hostAgents = pgTable('host_agents', {
  hostId: uuid('host_id')
    .primaryKey()
    .references(() => hosts.id, { onDelete: 'cascade' }),
  /** Last sign of life: connect, heartbeat, disconnect or report. */
  lastSeenAt: timestamp('last_seen_at', { withTimezone: true, mode: 'date' }),
  /** The desired revision the agent last said it applied; null until it says so. */
  appliedRevision: bigint('applied_revision', { mode: 'number' }),
  appliedAt: timestamp('applied_at', { withTimezone: true, mode: 'date' }),
  /** The host-level error of the agent's last apply, null when it succeeded. */
  lastError: text('last_error'),
  agentVersion: text('agent_version'),
  pluginId: text('plugin_id'),
  discoveredInstances: jsonb('discovered_instances').$type<DiscoveredInstanceJson[]>().notNull().default([]),
  discoveredAt: timestamp('discovered_at', { withTimezone: true, mode: 'date' }),
  /** When the agent last found the host differing from what it applied, and repaired it. */
  lastDriftAt: timestamp('last_drift_at', { withTimezone: true, mode: 'date' }),
  driftRepairs: integer('drift_repairs').notNull().default(0),
  /** Where the agent's current run got its first state: 'CACHE' (its on-disk last-known-good state) or 'CONTROLLER'; null until an agent says. */
  startedFrom: text('started_from').$type<AgentStartSource>(),
  /** With 'CACHE': the revision the agent applied from its cache at start. */
  cachedRevision: bigint('cached_revision', { mode: 'number' }),
  /** The port audit: the host's listening sockets as the agent last read them; null until an agent reports them. */
  listeningSockets: jsonb('listening_sockets').$type<ListeningSocketJson[]>(),
  listeningSocketsAt: timestamp('listening_sockets_at', { withTimezone: true, mode: 'date' }),
});

/**
 * One row per open `hostDesiredState` subscription of an agent token, on any replica. The
 * replica serving it refreshes `last_seen_at` while it is open and deletes the row when it ends;
 * a replica that crashes leaves its rows behind, so only rows seen recently count as online.
 * One row per connection (not a counter on the host) keeps a reconnecting agent online when its
 * old socket is noticed dead after the new one opened.
 */
export const hostAgentConnections = pgTable(
  'host_agent_connections',
  {
    id: uuid('id').primaryKey(),
    hostId: uuid('host_id')
      .notNull()
      .references(() => hosts.id, { onDelete: 'cascade' }),
    tokenId: uuid('token_id')
      .notNull()
      .references(() => apiTokens.id, { onDelete: 'cascade' }),
    connectedAt: timestamp('connected_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
    lastSeenAt: timestamp('last_seen_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [index('host_agent_connections_host_idx').on(t.hostId, t.lastSeenAt)],
);

/** A user's SSH public keys: what the controller's jump server accepts for them. */
export const sshKeys = pgTable(
  'ssh_keys',
  {
    id: uuid('id').primaryKey(),
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    name: text('name').notNull(),
    /** Key type as OpenSSH names it (`ssh-ed25519`). */
    algorithm: text('algorithm').notNull(),
    /** `type base64` without the comment. */
    publicKey: text('public_key').notNull(),
    /** `SHA256:…` as `ssh-keygen -l` prints it; one key belongs to one user. */
    fingerprint: text('fingerprint').notNull().unique('ssh_keys_fingerprint_unique'),
    lastUsedAt: timestamp('last_used_at', { withTimezone: true, mode: 'date' }),
    createdAt: createdAt(),
  },
  (t) => [index('ssh_keys_user_idx').on(t.userId)],
);

/** One SSH jump session to an instance: who, with which key, to where, when, how many bytes. */
export const sshSessions = pgTable(
  'ssh_sessions',
  {
    id: uuid('id').primaryKey(),
    userId: uuid('user_id').references(() => users.id, { onDelete: 'set null' }),
    keyFingerprint: text('key_fingerprint').notNull(),
    instanceId: uuid('instance_id').references(() => instances.id, { onDelete: 'set null' }),
    targetAddress: text('target_address').notNull(),
    targetPort: integer('target_port').notNull(),
    /** The SSH client's address and port, as the jump server saw them. */
    sourceAddress: text('source_address').notNull(),
    startedAt: timestamp('started_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
    endedAt: timestamp('ended_at', { withTimezone: true, mode: 'date' }),
    bytesToInstance: bigint('bytes_to_instance', { mode: 'number' }).notNull().default(0),
    bytesFromInstance: bigint('bytes_from_instance', { mode: 'number' }).notNull().default(0),
    /** Why it ended (`closed`, the tunnel's error), or why it never started. */
    endReason: text('end_reason'),
  },
  (t) => [index('ssh_sessions_user_idx').on(t.userId, t.startedAt)],
);
/** Bytes and packets into (rx) and out of (tx) an instance, added up. */
const trafficTotals = () => ({
  rxBytes: bigint('rx_bytes', { mode: 'number' }).notNull().default(0),
  txBytes: bigint('tx_bytes', { mode: 'number' }).notNull().default(0),
  rxPackets: bigint('rx_packets', { mode: 'number' }).notNull().default(0),
  txPackets: bigint('tx_packets', { mode: 'number' }).notNull().default(0),
});

/** Kinds of objects traffic is counted for (`host`: the sum of the host's NICs). */
export type TrafficObjectType = 'nic' | 'port_forward' | 'host';

/**
 * The last raw counter values the controller took from an agent, one row per counted object:
 * what the next report's delta is computed from. No foreign keys: traffic outlives its objects.
 */
export const trafficCounters = pgTable(
  'traffic_counters',
  {
    objectType: text('object_type', { enum: ['nic', 'port_forward'] }).notNull(),
    objectId: uuid('object_id').notNull(),
    hostId: uuid('host_id').notNull(),
    /** `<boot id>/<driver epoch>`: one life of the counter. */
    epoch: text('epoch').notNull(),
    /** The report sequence these values came with; older or equal ones add nothing. */
    sequence: bigint('sequence', { mode: 'number' }).notNull(),
    readAt: timestamp('read_at', { withTimezone: true, mode: 'date' }).notNull(),
    rxBytes: bigint('rx_bytes', { mode: 'number' }).notNull(),
    rxPackets: bigint('rx_packets', { mode: 'number' }).notNull(),
    txBytes: bigint('tx_bytes', { mode: 'number' }).notNull(),
    txPackets: bigint('tx_packets', { mode: 'number' }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.objectType, t.objectId] })],
);

/**
 * Traffic per object and time bucket (start inclusive, UTC): `minute` (kept 48 h) written as
 * reports arrive, `five_minute` (kept 40 days, for the 95th percentile), `hour` (90 days) and
 * `day` (2 years) rolled up from finished minutes.
 */
export const trafficBuckets = pgTable(
  'traffic_buckets',
  {
    resolution: text('resolution', { enum: ['minute', 'five_minute', 'hour', 'day'] }).notNull(),
    objectType: text('object_type', { enum: ['nic', 'port_forward', 'host'] }).notNull(),
    objectId: uuid('object_id').notNull(),
    start: timestamp('start', { withTimezone: true, mode: 'date' }).notNull(),
    hostId: uuid('host_id').notNull(),
    /** The instance the NIC or forward belongs to (null for a host's row). */
    instanceId: uuid('instance_id'),
    ...trafficTotals(),
  },
  (t) => [
    primaryKey({ columns: [t.resolution, t.objectType, t.objectId, t.start] }),
    index('traffic_buckets_instance_idx').on(t.resolution, t.instanceId, t.start),
    index('traffic_buckets_start_idx').on(t.resolution, t.start),
  ],
);

/** Traffic per object and billing period of the owner (kept forever); `host` rows use calendar months. */
export const trafficPeriods = pgTable(
  'traffic_periods',
  {
    objectType: text('object_type', { enum: ['nic', 'port_forward', 'host'] }).notNull(),
    objectId: uuid('object_id').notNull(),
    periodStart: timestamp('period_start', { withTimezone: true, mode: 'date' }).notNull(),
    periodEnd: timestamp('period_end', { withTimezone: true, mode: 'date' }).notNull(),
    hostId: uuid('host_id').notNull(),
    instanceId: uuid('instance_id'),
    ...trafficTotals(),
  },
  (t) => [primaryKey({ columns: [t.objectType, t.objectId, t.periodStart] }), index('traffic_periods_instance_idx').on(t.instanceId, t.periodStart)],
);

/** How far finished minutes have been rolled up into the coarser buckets (one row, locked while rolling). */
export const trafficRollups = pgTable('traffic_rollups', {
  id: text('id').primaryKey(),
  /** Minutes before this instant are rolled up. */
  rolledUntil: timestamp('rolled_until', { withTimezone: true, mode: 'date' }).notNull(),
});

/**
 * Where each bandwidth limit with a monthly quota stands in its current billing period: the
 * level reached (80 % warning, 100 % exceeded) and whether its throttle is in the desired state.
 * Persisted so a restarted controller neither lifts nor re-announces a throttle; a new period
 * (a different `period_start`) starts again from `normal`.
 */
export const trafficQuotaStates = pgTable('traffic_quota_states', {
  limitId: uuid('limit_id')
    .primaryKey()
    .references(() => bandwidthLimits.id, { onDelete: 'cascade' }),
  instanceId: uuid('instance_id').notNull(),
  periodStart: timestamp('period_start', { withTimezone: true, mode: 'date' }).notNull(),
  level: text('level', { enum: ['normal', 'warning', 'exceeded'] }).notNull(),
  /** The throttle rate is in the host's desired state (THROTTLE and exceeded). */
  throttled: boolean('throttled').notNull(),
  /** The period's total (rx + tx) and the quota when the level last changed. */
  usedBytes: bigint('used_bytes', { mode: 'number' }).notNull(),
  quotaBytes: bigint('quota_bytes', { mode: 'number' }).notNull(),
  changedAt: timestamp('changed_at', { withTimezone: true, mode: 'date' }).notNull(),
});

/**
 * A web terminal ticket (`openTerminal`): good once, for a short time, for one user, instance and
 * login name. Only the SHA-256 of the secret is kept; redeeming deletes the row, so a ticket is
 * used once across replicas.
 */
export const terminalTickets = pgTable(
  'terminal_tickets',
  {
    /** SHA-256 (hex) of the secret the browser sends in its first WebSocket message. */
    secretHash: text('secret_hash').primaryKey(),
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    instanceId: uuid('instance_id')
      .notNull()
      .references(() => instances.id, { onDelete: 'cascade' }),
    /** The login name on the instance. */
    username: text('username').notNull(),
    expiresAt: timestamp('expires_at', { withTimezone: true, mode: 'date' }).notNull(),
    createdAt: createdAt(),
  },
  (t) => [index('terminal_tickets_expires_idx').on(t.expiresAt)],
);

/**
 * An instance's SSH host key as the web terminal learned it on first use; a different key later
 * is refused (as `ssh` does) until the instance's keys are forgotten.
 */
export const instanceSshHostKeys = pgTable(
  'instance_ssh_host_keys',
  {
    instanceId: uuid('instance_id')
      .notNull()
      .references(() => instances.id, { onDelete: 'cascade' }),
    /** Key type as OpenSSH names it (`ssh-ed25519`). */
    algorithm: text('algorithm').notNull(),
    /** `type base64`. */
    publicKey: text('public_key').notNull(),
    /** `SHA256:…` as `ssh-keygen -l` prints it. */
    fingerprint: text('fingerprint').notNull(),
    createdAt: createdAt(),
  },
  (t) => [primaryKey({ columns: [t.instanceId, t.algorithm] })],
);
