/**
 * @gatehouse/plugin-proxmox: Gatehouse on a Proxmox VE node. Load it with
 * `gatehouse agent --plugin proxmox`, or through `loadDriver('@gatehouse/plugin-proxmox', config, ctx)`
 * of @gatehouse/sdk.
 */
export { validateConfig, type ProxmoxDriverConfig } from './config.js';
export { isDigestConflict, missingPrivilege, pveError } from './errors.js';
export { PveApiError, PveClient, PveConnectionError, PveTaskError, upidNode, type PveParams, type PveTaskStatus } from './pve-client.js';
export {
  QEMU_NIC_MODELS,
  formatLxcNic,
  formatQemuNic,
  guestNics,
  hostDevice,
  parseLxcNic,
  parsePropertyString,
  parseQemuNic,
  type GuestNic,
  type KeyAlias,
} from './property-string.js';
