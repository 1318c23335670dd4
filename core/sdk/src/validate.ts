/**
 * Structural validation of a desired-state document received from a controller: a driver must
 * never act on a malformed one. Throws `DriverConfigError` naming the first bad field
 * (`desired.instances[1].portForwards[0].hostPorts.end`) and its value.
 */
import { isIP } from 'node:net';
import { DESIRED_STATE_API_VERSION, type DesiredState } from './desired-state.js';
import { DriverConfigError } from './errors.js';

type Check = (value: unknown, path: string) => void;

const fail = (path: string, value: unknown, reason: string): never => {
  throw new DriverConfigError(path, value, reason);
};

const str: Check = (v, p) => {
  if (typeof v !== 'string' || v.length === 0 || v.length > 255) fail(p, v, 'must be a non-empty string of at most 255 characters');
};
const optional =
  (check: Check): Check =>
  (v, p) => {
    if (v !== undefined) check(v, p);
  };
const nullable =
  (check: Check): Check =>
  (v, p) => {
    if (v !== null) check(v, p);
  };
const int =
  (min: number, max: number): Check =>
  (v, p) => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) fail(p, v, `must be an integer from ${min} to ${max}`);
  };
const oneOf =
  (...values: string[]): Check =>
  (v, p) => {
    if (typeof v !== 'string' || !values.includes(v)) fail(p, v, `must be one of ${values.join(', ')}`);
  };
const ip: Check = (v, p) => {
  if (typeof v !== 'string' || isIP(v) === 0) fail(p, v, 'must be an IPv4 or IPv6 address');
};
const cidr: Check = (v, p) => {
  const [address, length, extra] = typeof v === 'string' ? v.split('/') : [];
  const family = address ? isIP(address) : 0;
  if (family === 0 || extra !== undefined || !/^\d{1,3}$/.test(length ?? '') || Number(length) > (family === 4 ? 32 : 128))
    fail(p, v, 'must be an address prefix such as 10.0.0.0/8');
};
const mac: Check = (v, p) => {
  if (typeof v !== 'string' || !/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(v)) fail(p, v, 'must be a MAC address such as 02:00:00:00:00:01');
};
const bool: Check = (v, p) => {
  if (typeof v !== 'boolean') fail(p, v, 'must be true or false');
};
const list =
  (item: Check, max = 100_000): Check =>
  (v, p) => {
    if (!Array.isArray(v)) return fail(p, v, 'must be a list');
    if (v.length > max) fail(p, `${v.length} items`, `must have at most ${max} items`);
    v.forEach((x, i) => item(x, `${p}[${i}]`));
  };
const object =
  (fields: Record<string, Check>, extra?: (o: Record<string, unknown>, p: string) => void): Check =>
  (v, p) => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return fail(p, v, 'must be an object');
    const o = v as Record<string, unknown>;
    for (const [name, check] of Object.entries(fields)) check(o[name], `${p}.${name}`);
    extra?.(o, p);
  };

const port = int(1, 65_535);
const range = object({ start: port, end: port }, (o, p) => {
  if ((o.end as number) < (o.start as number)) fail(`${p}.end`, o.end, `must not be below start ${String(o.start)}`);
});
const action = oneOf('allow', 'reject', 'drop');
const rate = nullable(int(1, 1e12));

const address = object({ address: ip, prefixLength: int(0, 128), delegated: bool, gateway: nullable(ip), dns: list(ip, 8) });
const nic = object({ id: str, name: str, mac, network: str, addresses: list(address, 64) });
const rule = object({
  id: str,
  direction: oneOf('inbound', 'outbound'),
  protocol: oneOf('tcp', 'udp', 'icmp', 'all'),
  sourceCidr: nullable(cidr),
  destinationCidr: nullable(cidr),
  ports: list(range, 64),
  action,
  priority: int(-1e9, 1e9),
});
const bandwidth = object({
  id: str,
  nicId: nullable(str),
  ingressBps: rate,
  egressBps: rate,
  ingressBurstBytes: rate,
  egressBurstBytes: rate,
  monthlyQuotaBytes: nullable(int(1, Number.MAX_SAFE_INTEGER)),
  quotaAction: nullable(oneOf('throttle', 'notify')),
  throttleBps: rate,
});
const forward = object(
  {
    id: str,
    protocol: oneOf('tcp', 'udp', 'both'),
    hostAddress: nullable(ip),
    hostPorts: range,
    targetAddress: ip,
    targetPorts: range,
    sourceCidrs: list(cidr, 256),
    rateLimit: optional(
      nullable(
        object({ perSource: nullable(int(1, 1_000_000)), total: nullable(int(1, 1_000_000)), burst: int(0, 1_000_000), action: oneOf('drop', 'reject') }),
      ),
    ),
    balance: optional(nullable(object({ targets: list(object({ instanceId: str, address: ip, weight: int(1, 100) }), 16), sourceAffinity: bool }))),
  },
  (o, p) => {
    const host = o.hostPorts as { start: number; end: number };
    const target = o.targetPorts as { start: number; end: number };
    if (host.end - host.start !== target.end - target.start) fail(`${p}.targetPorts`, target, `must be as long as hostPorts ${host.start}-${host.end}`);
    if (o.hostAddress !== null && isIP(o.hostAddress as string) !== isIP(o.targetAddress as string))
      fail(`${p}.hostAddress`, o.hostAddress, 'must be of the same family as targetAddress');
    const balance = o.balance as { targets: { address: string }[] } | null | undefined;
    if (balance) balanceCheck(balance.targets, o.targetAddress as string, `${p}.balance.targets`);
  },
);
// a balanced forward's targets: at least one, one family, each address once, targetAddress among them
function balanceCheck(targets: { address: string }[], targetAddress: string, p: string): void {
  if (targets.length === 0) fail(p, targets, 'must list at least one target');
  const seen = new Set<string>();
  targets.forEach((t, i) => {
    if (isIP(t.address) !== isIP(targetAddress)) fail(`${p}[${i}].address`, t.address, `must be of the same family as targetAddress ${targetAddress}`);
    if (seen.has(t.address)) fail(`${p}[${i}].address`, t.address, 'is listed twice');
    seen.add(t.address);
  });
  if (!seen.has(targetAddress)) fail(p, targets.map((t) => t.address).join(','), `must include targetAddress ${targetAddress}`);
}
const headerFields = {
  id: str,
  name: str,
  externalId: nullable(str),
  nics: list(nic, 64),
  firewall: object({ inboundPolicy: action, outboundPolicy: action, rules: list(rule, 10_000) }),
  bandwidth: list(bandwidth, 65),
};
// a host may forward 250,000 ports (issue 20), all to one instance
const instance = object({ ...headerFields, portForwards: list(forward, 1_000_000) });
const revision = int(0, Number.MAX_SAFE_INTEGER);
const document = object(
  {
    apiVersion: (v, p) => {
      if (v !== DESIRED_STATE_API_VERSION) fail(p, v, `must be ${DESIRED_STATE_API_VERSION} (the desired-state version this driver understands)`);
    },
    hostId: str,
    hostName: str,
    revision,
    publicAddresses: list(ip, 256),
    instances: list(instance),
  },
  (o, p) => {
    const ids = new Set<string>();
    (o.instances as { id: string }[]).forEach((i, n) => {
      if (ids.has(i.id)) fail(`${p}.instances[${n}].id`, i.id, 'appears twice');
      ids.add(i.id);
    });
  },
);

// Documents built by applyDesiredStatePatch from a valid document and a checked patch: valid by
// construction, so checking them again (115 ms for 60,000 forwards) is skipped.
const valid = new WeakSet<object>();

/** Records a document as valid; only for documents built from checked parts (a patched document). */
export function markValid(state: DesiredState): void {
  valid.add(state);
}

/** Returns `value` as a DesiredState, or throws DriverConfigError naming the first bad field. */
export function validateDesiredState(value: unknown, path = 'desired'): DesiredState {
  if (typeof value === 'object' && value !== null && valid.has(value)) return value as DesiredState;
  document(value, path);
  return value as DesiredState;
}

/** Checks one port forward. */
export const checkForward: Check = forward;
/** Checks one instance without its forwards. */
export const checkInstanceHeader: Check = object(headerFields);

const idList = list(str);
const anObject: Check = object({});
const patchShape = object({
  baseRevision: revision,
  revision,
  hostName: optional(str),
  publicAddresses: optional(list(ip, 256)),
  instances: list(anObject),
  removedInstances: idList,
  portForwards: list(object({ instanceId: str, forward: anObject })),
  removedPortForwards: idList,
});

/**
 * Checks the outline of a desired-state patch (`DesiredStatePatch` of @gatehouse/agent-protocol;
 * its instances and forwards are checked one by one as they are applied).
 */
export function checkPatchShape(value: unknown, path: string): void {
  patchShape(value, path);
}
