/**
 * @gatehouse/dataplane: nftables, tc and ip for a Linux host, and the shared base of the drivers
 * built on them. This is the public API for plugin authors (see README.md); everything else in
 * `src/` is internal and may change.
 */
export { DATAPLANE_CAPABILITIES, DataplaneDriver, dataplaneCapabilities, type DataplaneDriverOptions, type HostSide } from './driver-base.js';
export { Dataplane, type DataplaneApplyResult, type DataplaneCounters, type DataplaneOptions } from './dataplane.js';
export { TABLE } from './render.js';
export { deleteLink, hostPeer, linkCidrs, listLinks, removeOrphanIfbs, setAlias, type Link } from './links.js';
export { nicCounters, shapingFor, type NicPlacement } from './nics.js';
export { applyShaping, ifbName, readShaping, removeShaping, shapingStats, type ShapingSpec, type ShapingStats } from './tc.js';
export { cidrContains, diagnoseForward, type DiagnosisContext } from './diagnose.js';
