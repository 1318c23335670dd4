/** @gatehouse/dataplane: nftables, tc and ip for a Linux host. */
export { NftError, applyNft, deleteTable, listTable, replaceTable, type NftCommand } from './nft.js';
export { Dataplane, type DataplaneApplyResult, type DataplaneCounters } from './dataplane.js';
export { idFromName, observeListing } from './observe.js';
export {
  TABLE,
  changedForwards,
  firewallChainName,
  forwardCounterName,
  forwardElements,
  instanceCounterName,
  objectName,
  renderForwardMaps,
  renderRuleset,
} from './render.js';
export { contentOfCommands, contentOfListing, driftBetween, incrementalCommands, type TableContent } from './table.js';
export * from './tc.js';
export { dataplaneStats, nicCounters, observeShaping, shapingDifferences, shapingFor, type Link, type NicPlacement } from './nics.js';
