/**
 * @gatehouse/plugin-linux: the reference plugin. Load it with `gatehouse agent --plugin linux`, or
 * through `loadDriver('@gatehouse/plugin-linux', config, ctx)` of @gatehouse/sdk.
 */
import { DRIVER_API_VERSION, type DriverPlugin } from '@gatehouse/sdk';
import { LinuxDriver, validateConfig, type LinuxDriverConfig } from './driver.js';

export { CAPABILITIES, LinuxDriver, validateConfig, type LinuxDriverConfig } from './driver.js';
export { hostVethName, instanceTag } from './links.js';

const plugin: DriverPlugin<LinuxDriverConfig | undefined> = {
  id: 'linux',
  apiVersion: DRIVER_API_VERSION,
  createDriver: (config) => new LinuxDriver(validateConfig(config)),
};
export default plugin;
