/** @gatehouse/dataplane: nftables, tc and ip for a Linux host. */
export { NftError, applyNft, deleteTable, listTable, replaceTable, type NftCommand } from './nft.js';
export { TABLE, firewallChainName, forwardElements, renderRuleset } from './render.js';
