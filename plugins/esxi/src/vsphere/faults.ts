/**
 * vSphere faults as typed errors, and their mapping onto the SDK's closed set of driver errors.
 * A SOAP fault names its type in `detail` (`<InvalidArgumentFault xsi:type="InvalidArgument">`), a
 * failed task in `info.error.fault`; both become a `VsphereFault` whose `type` is that name.
 */
import { ConflictError, DriverConfigError, DriverError, DriverInternalError, HostUnreachableError, TransientError } from '@gatehouse/sdk';
import { child, childText, type XmlElement } from './xml.js';

/** The fault types this plugin treats specially; others keep their own name. */
export type KnownFaultType =
  | 'NotAuthenticated'
  | 'InvalidLogin'
  | 'NoPermission'
  | 'InvalidArgument'
  | 'InvalidDeviceSpec'
  | 'InvalidRequest'
  | 'InvalidState'
  | 'InvalidPowerState'
  | 'ConcurrentAccess'
  | 'TaskInProgress'
  | 'HostCommunication'
  | 'ManagedObjectNotFound'
  | 'NotFound'
  | 'AlreadyExists'
  | 'DuplicateName'
  | 'ResourceInUse'
  | 'NotSupported'
  | 'MethodNotFound';

/** A fault vSphere answered with (a SOAP fault, or a task that ended in error). */
export class VsphereFault extends Error {
  constructor(
    /** The fault's type name, e.g. `InvalidArgument`. */
    readonly type: KnownFaultType | (string & {}),
    /** vSphere's own message (faultstring or localizedMessage), possibly empty. */
    readonly faultMessage: string,
    /** The call or task that failed. */
    readonly method: string,
    /** The fault's own fields (invalidProperty, privilegeId, deviceIndex…), as text. */
    readonly fields: Record<string, string> = {},
  ) {
    super(`${method}: vSphere fault ${type}${faultMessage ? `: ${faultMessage}` : ''}${describeFields(fields)}`);
    this.name = 'VsphereFault';
  }
}

/** vSphere could not be reached or answered something that is not SOAP. */
export class VsphereTransportError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'VsphereTransportError';
  }
}

/** The server's certificate is not the pinned one, or not signed by the configured CA. */
export class VsphereTlsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VsphereTlsError';
  }
}

function describeFields(fields: Record<string, string>): string {
  const entries = Object.entries(fields);
  return entries.length ? ` (${entries.map(([k, v]) => `${k}=${v}`).join(', ')})` : '';
}

/** The fault element's type: its xsi:type, else its element name without the `Fault` suffix. */
function faultType(element: XmlElement): string {
  return element.attrs.type ?? element.name.replace(/Fault$/, '');
}

/** The simple fields of a fault element (nested ones are left out). */
function faultFields(element: XmlElement): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const c of element.children) if (c.children.length === 0 && c.text.trim() !== '') fields[c.name] = c.text.trim();
  return fields;
}

/** A SOAP `Fault` element as a VsphereFault. */
export function soapFault(fault: XmlElement, method: string): VsphereFault {
  const detail = child(fault, 'detail')?.children[0];
  const message = childText(fault, 'faultstring') ?? '';
  if (!detail) return new VsphereFault(childText(fault, 'faultcode') ?? 'UnknownFault', message, method);
  return new VsphereFault(faultType(detail), message, method, faultFields(detail));
}

/** A task's `LocalizedMethodFault` (`info.error`) as a VsphereFault. */
export function taskFault(error: XmlElement | undefined, method: string): VsphereFault {
  const fault = child(error, 'fault');
  return new VsphereFault(fault ? faultType(fault) : 'UnknownFault', childText(error, 'localizedMessage') ?? '', method, fault ? faultFields(fault) : {});
}

/**
 * An error of the vSphere client as the SDK's: credentials and privileges are configuration
 * (the operator fixes them), refusals of a change are conflicts, locks and vanished objects are
 * transient, an unreachable or non-SOAP endpoint is unreachable, the rest is internal.
 */
export function toSdkError(err: unknown, what: string): DriverError {
  if (err instanceof DriverError) return err;
  if (err instanceof VsphereFault) {
    const message = `Failed ${what}: ${err.message}`;
    switch (err.type) {
      case 'InvalidLogin':
      case 'NotAuthenticated':
        return new DriverConfigError('config.username', undefined, `is not accepted by vSphere (${err.type}) while ${what}`);
      case 'NoPermission':
        return new DriverConfigError('config.username', undefined, `lacks the privilege ${err.fields.privilegeId ?? '(unnamed)'} needed for ${what}`);
      case 'ConcurrentAccess':
      case 'TaskInProgress':
      case 'HostCommunication':
      case 'ManagedObjectNotFound':
      case 'NotFound':
        return new TransientError(message, { cause: err });
      case 'InvalidArgument':
      case 'InvalidDeviceSpec':
      case 'InvalidRequest':
      case 'InvalidState':
      case 'InvalidPowerState':
      case 'AlreadyExists':
      case 'DuplicateName':
      case 'ResourceInUse':
      case 'NotSupported':
        return new ConflictError(`${message} (vSphere refused)`);
      default:
        return new DriverInternalError(message, { cause: err });
    }
  }
  if (err instanceof VsphereTransportError || err instanceof VsphereTlsError) return new HostUnreachableError(`Failed ${what}: ${err.message}`, { cause: err });
  const e = err instanceof Error ? err : new Error(String(err));
  return new DriverInternalError(`Failed ${what}: ${e.message}`, { cause: err });
}
