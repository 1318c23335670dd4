/**
 * @gatehouse/plugin-proxmox/testing — a Proxmox VE API of our own for tests (this package's and
 * its users'), enforcing the official API schema, with guests whose NICs are real veths in network
 * namespaces named as PVE names them.
 */
export {
  PveTestServer,
  RecordingBacking,
  type Guest,
  type GuestBacking,
  type GuestInterface,
  type PveFaults,
  type TestToken,
} from './test-server/api-server.js';
export {
  PveSchema,
  SCHEMA_FILE,
  checkValue,
  findSchemaFile,
  paramSchema,
  validValue,
  validateParams,
  violations,
  type MethodSchema,
  type ParamSchema,
  type Violation,
} from './test-server/schema.js';
export { LAB_PUBLIC_V4, LAB_TOKEN, LAB_V4_PREFIX, PveLab, pveLabAvailable } from './test-server/netns-lab.js';
