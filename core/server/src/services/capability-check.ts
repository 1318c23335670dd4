/**
 * Refusing objects a host's driver cannot apply. The checks themselves are the SDK's (the agent
 * runs the same ones); this turns their answer into the API's CAPABILITY_NOT_SUPPORTED error,
 * named after the operation, the host, the driver and the capability. A host whose agent never
 * reported its driver accepts everything: its objects stay PENDING, and its agent reports those
 * it cannot apply as FAILED.
 */
import { capabilityMessage, type CapabilityViolation, type DriverCapabilities } from '@gatehouse/sdk';
import type { HostDriverJson } from '../db/schema.js';
import { CapabilityNotSupportedError } from '../support/errors.js';

/** What the check needs of a host. */
export interface CapabilityHost {
  name: string;
  driver: HostDriverJson | null;
}

/**
 * Throws CAPABILITY_NOT_SUPPORTED when the host's driver lacks what `check` finds missing;
 * `doing` reads "creating port forward", `field` names a violation's field as the client knows it.
 */
export function requireCapability(
  host: CapabilityHost,
  doing: string,
  check: (capabilities: DriverCapabilities) => CapabilityViolation | undefined,
  field: (name: string) => string,
): void {
  const error = capabilityError(host, doing, check, field);
  if (error) throw error;
}

/** The CAPABILITY_NOT_SUPPORTED error `requireCapability` would throw, or undefined. */
export function capabilityError(
  host: CapabilityHost,
  doing: string,
  check: (capabilities: DriverCapabilities) => CapabilityViolation | undefined,
  field: (name: string) => string,
): CapabilityNotSupportedError | undefined {
  if (!host.driver) return undefined;
  const violation = check(host.driver.capabilities);
  if (!violation) return undefined;
  return new CapabilityNotSupportedError(
    violation.capability,
    `Failed ${doing} on host ${host.name}: ${capabilityMessage(host.driver.id, violation)}`,
    field(violation.field),
    violation.value,
  );
}
