/**
 * @gatehouse/plugin-proxmox: Gatehouse on a Proxmox VE node. Load it with
 * `gatehouse agent --plugin proxmox`, or through `loadDriver('@gatehouse/plugin-proxmox', config, ctx)`
 * of @gatehouse/sdk.
 */
import { DRIVER_API_VERSION, type DriverPlugin } from '@gatehouse/sdk';
import { validateConfig } from './config.js';
import { ProxmoxDriver } from './driver.js';

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
export { CAPABILITIES, NIC_TAG, OWNER_TAG, ProxmoxDriver, type PveGuest } from './driver.js';
export { PVE_CALLS } from './pve-paths.js';

/** What the agent loads. */
const plugin: DriverPlugin = {
  id: 'proxmox',
  apiVersion: DRIVER_API_VERSION,
  createDriver: (config) => new ProxmoxDriver(validateConfig(config)),
};
export default plugin;
