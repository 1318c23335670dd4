/**
 * @gatehouse/plugin-esxi: Gatehouse in front of a VMware ESXi host. Load it with
 * `gatehouse agent --plugin esxi` on the Linux gateway of the VMs' private port group, or through
 * `loadDriver('@gatehouse/plugin-esxi', config, ctx)` of @gatehouse/sdk.
 */
import { DRIVER_API_VERSION, type DriverPlugin } from '@gatehouse/sdk';
import { validateConfig } from './config.js';
import { EsxiDriver } from './driver.js';

export { validateConfig, type EsxiDriverConfig } from './config.js';
export { CAPABILITIES, EsxiDriver, PORT_GROUP_PREFIX, shapedPortGroup } from './driver.js';
export { NICS_KEY, OWNER_KEY, readVms, type Vm, type VmNic } from './inventory.js';
export * from './vsphere/index.js';

/** What the agent loads. */
const plugin: DriverPlugin = {
  id: 'esxi',
  apiVersion: DRIVER_API_VERSION,
  createDriver: (config) => new EsxiDriver(validateConfig(config)),
};
export default plugin;
