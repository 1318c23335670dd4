/**
 * A driver whose outcomes a test scripts, recording every call: for agent tests that need no
 * root (what the agent calls, when, with what), next to the fake controller.
 */
import {
  DRIVER_API_VERSION,
  expectedObservation,
  type ApplyResult,
  type DesiredState,
  type DriverCapabilities,
  type NetworkDriver,
  type ObjectResult,
  type StatsPart,
  type StatsResult,
} from '@gatehouse/sdk';

/** Every capability on. */
export const ALL_CAPABILITIES: DriverCapabilities = {
  portForwards: { implementation: 'dataplane', protocols: ['tcp', 'udp'], portRanges: true, ipv6: true, sourceAllowLists: true },
  firewall: {
    implementation: 'dataplane',
    directions: ['inbound', 'outbound'],
    actions: ['allow', 'reject', 'drop'],
    priorities: true,
    ipv6: true,
    icmp: true,
  },
  shaping: { implementation: 'dataplane', ingress: true, egress: true, burst: true },
  nics: { max: 8, hotplug: true, staticAddressing: true },
};

/** One recorded call. */
export type ScriptedCall =
  { method: 'apply'; desired: DesiredState } | { method: 'release'; instanceId: string } | { method: 'gc'; validInstanceIds: string[] };

/** Applies every object, unless `outcome` says otherwise for it (or throws for the whole apply). */
export class ScriptedDriver implements NetworkDriver {
  readonly id = 'scripted';
  readonly version = '9.9.9';
  readonly apiVersion = DRIVER_API_VERSION;
  readonly calls: ScriptedCall[] = [];
  /** An object's result other than applied; or an error to throw from apply. */
  outcome: (objectId: string, revision: number) => ObjectResult['error'] | undefined = () => undefined;
  throwing: ((revision: number) => Error | undefined) | undefined;
  private current: DesiredState | undefined;

  constructor(readonly capabilities: DriverCapabilities = ALL_CAPABILITIES) {}

  /** The calls of one method. */
  callsOf<M extends ScriptedCall['method']>(method: M): Extract<ScriptedCall, { method: M }>[] {
    return this.calls.filter((c): c is Extract<ScriptedCall, { method: M }> => c.method === method);
  }

  async discover() {
    return { instances: [] };
  }
  async apply(_ctx: unknown, input: { desired: DesiredState }): Promise<ApplyResult> {
    const { desired } = input;
    this.calls.push({ method: 'apply', desired });
    const thrown = this.throwing?.(desired.revision);
    if (thrown) throw thrown;
    this.current = desired;
    const objects: ObjectResult[] = [];
    const add = (objectType: ObjectResult['objectType'], objectId: string) => {
      const error = this.outcome(objectId, desired.revision);
      objects.push(error ? { objectType, objectId, status: 'failed', error } : { objectType, objectId, status: 'applied' });
    };
    for (const i of desired.instances) {
      for (const n of i.nics) add('nic', n.id);
      for (const f of i.portForwards) add('port_forward', f.id);
      for (const r of i.firewall.rules) add('firewall_rule', r.id);
      for (const b of i.bandwidth) add('bandwidth_limit', b.id);
    }
    return { changed: true, objects };
  }
  async observe() {
    return { state: expectedObservation(this.current ?? { apiVersion: 1, hostId: '', hostName: '', revision: 0, publicAddresses: [], instances: [] }) };
  }
  async stats(_ctx?: unknown, _input?: { parts?: readonly StatsPart[] }): Promise<StatsResult> {
    return { forwards: [], nics: [] };
  }
  async release(_ctx: unknown, input: { instanceId: string }) {
    this.calls.push({ method: 'release', instanceId: input.instanceId });
    return { released: true };
  }
  async gc(_ctx: unknown, input: { validInstanceIds: readonly string[] }) {
    this.calls.push({ method: 'gc', validInstanceIds: [...input.validInstanceIds] });
    return { removedInstanceIds: [] };
  }
}
