/** @gatehouse/agent-protocol: what a host agent and its controller say to each other. */
export * from './documents.js';
export * from './reports.js';
export * from './traffic.js';
export {
  applyDesiredStatePatch,
  compareForwards,
  diffDesiredState,
  patchIsEmpty,
  type DesiredInstanceHeader,
  type DesiredStateMessage,
  type DesiredStatePatch,
} from './patch.js';
export * from './tunnel.js';
export * from './diagnosis.js';
