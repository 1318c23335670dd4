/**
 * nftables through its JSON interface: a list of commands is one `nft -j -f FILE` transaction, so it
 * applies whole or not at all (the kernel keeps the previous ruleset when any command fails).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CommandError, run, type ExecTarget } from '@gatehouse/sdk';

/** One command of libnftables' JSON schema, e.g. `{ add: { table: {...} } }`. */
export type NftCommand = Record<string, unknown>;

/**
 * glibc allocator settings (the value of GLIBC_TUNABLES) for the nft process of a transaction. nft 1.0.6 allocates some 2 KiB per
 * set element (1.5 GiB for the 750,000 elements of 250,000 forwards), and most of a large install
 * went to glibc's malloc
 * and its page faults: transparent huge pages for the heap, a 256 MiB heap growth step and no
 * fastbins took nft -j -f of the 250,000-forward table from 12.4 to 4.1 CPU-s (same transaction,
 * scratch namespace, load 3-3.5). Passed through `env` (no shell); harmless for small transactions.
 */
export const NFT_MALLOC_TUNABLES = 'glibc.malloc.hugetlb=1:glibc.malloc.top_pad=268435456:glibc.malloc.mxfast=0';

/** nft refused a transaction; nothing of it was applied. */
export class NftError extends Error {
  constructor(readonly stderr: string) {
    super(`nft refused the transaction (nothing was applied): ${stderr.trim()}`);
    this.name = 'NftError';
  }
}

/**
 * Applies commands as one atomic transaction. The JSON goes through a private temporary file:
 * nft cannot read a pipe or socket as /dev/stdin, and an argument is capped at 128 KiB.
 */
export async function applyNft(commands: readonly NftCommand[], target: ExecTarget = {}): Promise<void> {
  if (commands.length === 0) return;
  const dir = await mkdtemp(join(tmpdir(), 'gatehouse-nft-'));
  try {
    const file = join(dir, 'ruleset.json');
    await writeFile(file, JSON.stringify({ nftables: commands }), { mode: 0o600 });
    await run('env', [`GLIBC_TUNABLES=${NFT_MALLOC_TUNABLES}`, 'nft', '-j', '-f', file], target);
  } catch (err) {
    if (err instanceof CommandError) throw new NftError(err.stderr);
    throw err;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * The objects of one table as nft lists them (rules, chains, sets, maps, counters), or undefined
 * when absent. `terse` leaves out set and map elements; `signal` stops the listing (nft killed).
 */
export async function listTable(
  family: string,
  name: string,
  target: ExecTarget = {},
  options: { terse?: boolean; signal?: AbortSignal } = {},
): Promise<Record<string, unknown>[] | undefined> {
  try {
    const out = await run('nft', ['-j', ...(options.terse ? ['-t'] : []), 'list', 'table', family, name], { ...target, signal: options.signal });
    const parsed = JSON.parse(out) as { nftables: Record<string, unknown>[] };
    return parsed.nftables.filter((o) => !('metainfo' in o));
  } catch (err) {
    if (err instanceof CommandError && /No such file or directory/.test(err.stderr)) return undefined;
    throw err;
  }
}

/**
 * Commands that replace a table's whole content in one transaction: create it if missing, delete
 * it, create it again with `content`. Applying the same content twice leaves the same ruleset.
 */
export function replaceTable(family: string, name: string, content: readonly NftCommand[]): NftCommand[] {
  const table = { family, name };
  return [{ add: { table } }, { delete: { table } }, { add: { table } }, ...content];
}

/** Commands deleting a table, which succeed when it is already gone. */
export function deleteTableCommands(family: string, name: string): NftCommand[] {
  return [{ add: { table: { family, name } } }, { delete: { table: { family, name } } }];
}

/** Deletes a table; succeeds when it is already gone. */
export async function deleteTable(family: string, name: string, target: ExecTarget = {}): Promise<void> {
  await applyNft(deleteTableCommands(family, name), target);
}
