/**
 * @gatehouse/plugin-docker: containers of a Docker host. Load it with `gatehouse agent --plugin
 * docker`, or through `loadDriver('@gatehouse/plugin-docker', config, ctx)` of @gatehouse/sdk.
 */
import { DRIVER_API_VERSION, type DriverPlugin } from '@gatehouse/sdk';
import { validateConfig } from './config.js';
import { DockerDriver } from './driver.js';

export { DEFAULT_SOCKET, validateConfig, type DockerDriverConfig } from './config.js';
export { CAPABILITIES, DockerDriver, MANAGED_LABEL } from './driver.js';
export { DockerEngine, ENGINE_API_VERSION } from './engine.js';
export { endpointAlias, vethAlias } from './links.js';

const plugin: DriverPlugin = {
  id: 'docker',
  apiVersion: DRIVER_API_VERSION,
  createDriver: (config) => new DockerDriver(validateConfig(config)),
};
export default plugin;
