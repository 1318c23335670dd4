/**
 * PVE's failures as the SDK's typed errors, mapped once: a refused token or a missing privilege is
 * a configuration error naming the token (and the privilege and path PVE names), PVE unreachable is
 * HOST_UNREACHABLE, a 5xx, a broken connection, a failed task or a concurrent edit is TRANSIENT.
 */
import { DriverConfigError, DriverError, DriverInternalError, HostUnreachableError, TransientError, toDriverError } from '@gatehouse/sdk';
import { PveApiError, PveConnectionError, PveTaskError } from './pve-client.js';

/** The privilege and ACL path of PVE's "Permission check failed (/vms/100, VM.Config.Network)". */
export function missingPrivilege(reason: string): { path: string; privilege: string } | undefined {
  const m = /Permission check failed \(([^,()]+),\s*([^()]+)\)/.exec(reason);
  return m ? { path: m[1]!.trim(), privilege: m[2]!.trim() } : undefined;
}

/** Whether PVE refused an edit because the configuration changed since it was read (the `digest`). */
export function isDigestConflict(err: unknown): boolean {
  const text = err instanceof PveTaskError ? err.exitstatus : err instanceof PveApiError ? err.reason : '';
  return /checksum miss?match|detected modified configuration/.test(text);
}

/** Any error of a PVE call as a DriverError; `what` reads "adding net1 to VM 100". */
export function pveError(err: unknown, what: string, config: { url: string; tokenId: string; fingerprint?: string; caFile?: string }): DriverError {
  if (err instanceof DriverError) return err;
  if (err instanceof PveConnectionError) {
    if (err.kind === 'unreachable') return new HostUnreachableError(`Failed ${what}: PVE at ${config.url} is unreachable (${err.message})`, { cause: err });
    if (err.kind === 'tls') {
      const field = config.fingerprint ? 'config.fingerprint' : 'config.caFile';
      return new DriverConfigError(field, config.fingerprint ?? config.caFile, `does not verify PVE's certificate at ${config.url}: ${err.message}`);
    }
    return new TransientError(`Failed ${what}: ${err.kind === 'timeout' ? 'PVE did not answer in time' : 'the connection to PVE broke'} (${err.message})`, {
      cause: err,
    });
  }
  if (err instanceof PveTaskError) return new TransientError(`Failed ${what}: the PVE task ended with "${err.exitstatus}"`, { cause: err });
  if (err instanceof PveApiError) {
    if (err.status === 401)
      return new DriverConfigError(
        'config.tokenId',
        config.tokenId,
        `was refused by PVE (${err.reason || 'authentication failure'}): the token is expired or deleted, or config.secret is not its secret`,
      );
    if (err.status === 403) {
      const missing = missingPrivilege(err.reason);
      const which = missing ? `lacks the privilege ${missing.privilege} on ${missing.path}` : `is not allowed ${what} (${err.reason})`;
      return new DriverConfigError(
        'config.tokenId',
        config.tokenId,
        `${which}: grant it to the token's user and, for a privilege-separated token, to the token as well (it has only what both are granted)`,
      );
    }
    if (err.status >= 500 || err.status === 404) return new TransientError(`Failed ${what}: ${err.message}`, { cause: err });
    return new DriverInternalError(`Failed ${what}: PVE refused the request: ${err.message}`, { cause: err });
  }
  return toDriverError(err);
}
