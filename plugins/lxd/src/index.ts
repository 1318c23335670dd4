/**
 * @gatehouse/plugin-lxd: Gatehouse on an LXD host. Load it with `gatehouse agent --plugin lxd`, or
 * through `loadDriver('@gatehouse/plugin-lxd', config, ctx)` of @gatehouse/sdk.
 */
import { DRIVER_API_VERSION, type DriverPlugin } from '@gatehouse/sdk';
import { validateConfig } from './config.js';
import { LxdDriver } from './driver.js';

export { validateConfig, type LxdDriverConfig } from './config.js';
export { CAPABILITIES, LxdDriver } from './driver.js';
export { DEVICE_PREFIX, OWNER_KEY, nicDeviceName } from './instances.js';
export { LxdApiError, LxdClient, type LxdInstance, type LxdInstanceState } from './lxd-client.js';

/** What the agent loads. */
const plugin: DriverPlugin = {
  id: 'lxd',
  apiVersion: DRIVER_API_VERSION,
  createDriver: (config) => new LxdDriver(validateConfig(config)),
};
export default plugin;
