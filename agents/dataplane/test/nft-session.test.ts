/**
 * NftSession against real nft in a lab namespace: transactions applied in order through one
 * process, a refused transaction applying nothing (NftError with nft's words) while the process
 * carries on, changes made by other processes seen, text outside ASCII kept, the process killed or
 * stopped in the middle of a transaction (the transaction goes through `nft -j -f`, the next starts
 * a new process), big transactions through `nft -j -f`, and no nft process left after `close`.
 */
import { run } from '@gatehouse/sdk';
import { NetnsLab, labAvailable, type LabNamespace } from '@gatehouse/sdk/testkit';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Dataplane } from '../src/dataplane.js';
import { NftError, applyNft, listTable, type NftCommand } from '../src/nft.js';
import { NftSession } from '../src/nft-session.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await labAvailable();

it('can create network namespaces (root) here', () => {
  if (!REQUIRE_SYSTEM && !available) return; // skipped locally without root; CI requires it
  expect(available).toBe(true);
});

const T = { family: 'inet', table: 'session_test' };
const element = (verb: 'add' | 'delete', ...ports: number[]): NftCommand => ({ [verb]: { element: { ...T, name: 'ports', elem: ports } } });

/** Whether a process with this PID exists (a reaped child is gone). */
function exists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe.skipIf(!available && !REQUIRE_SYSTEM)('a long-lived nft -j -i in a lab namespace', () => {
  const lab = new NetnsLab();
  let host: LabNamespace;
  const sessions: NftSession[] = [];
  const session = (options: ConstructorParameters<typeof NftSession>[1] = {}) => {
    const s = new NftSession({ netns: host.name }, options);
    sessions.push(s);
    return s;
  };
  /** The set's elements as nft lists them. */
  const ports = async () => {
    const listing = (await listTable(T.family, T.table, { netns: host.name })) ?? [];
    const set = listing.find((o) => 'set' in o)?.set as { elem?: number[] } | undefined;
    return set?.elem ?? [];
  };
  /** PIDs of the processes in the namespace (asked from outside it). */
  const pidsInNamespace = async () => (await run('ip', ['netns', 'pids', host.name])).split('\n').filter(Boolean).map(Number);

  beforeAll(async () => {
    host = await lab.namespace('host');
  });
  // every test's sessions closed, no process of theirs may stay in the namespace
  afterEach(async () => {
    for (const s of sessions.splice(0)) await s.close();
    expect(await pidsInNamespace()).toEqual([]);
  });
  afterAll(async () => {
    await lab.cleanup();
  });

  const reset = (s: NftSession) =>
    s.apply([
      { add: { table: { family: T.family, name: T.table } } },
      { delete: { table: { family: T.family, name: T.table } } },
      { add: { table: { family: T.family, name: T.table } } },
      { add: { set: { ...T, name: 'ports', type: 'inet_service' } } },
    ]);

  it('applies transactions queued at once in their order, through one process', async () => {
    const s = session();
    // out of order, a delete would find nothing to delete and the add after it would be undone
    await Promise.all([
      reset(s),
      s.apply([element('add', 1, 2)]),
      s.apply([element('delete', 1)]),
      s.apply([element('add', 3)]),
      s.apply([element('delete', 2)]),
    ]);
    expect(await ports()).toEqual([3]);
    expect(s.stats).toMatchObject({ started: 1, viaSession: 5, oneShot: 0, fallbacks: 0 });
    expect((await pidsInNamespace()).includes(s.pid!)).toBe(true);
  });

  it('applies nothing of a refused transaction, reports nft’s error as NftError, and carries on in the same process', async () => {
    const s = session();
    await reset(s);
    await s.apply([element('add', 10)]);
    const pid = s.pid;
    // the last command fails: neither the element nor the chain before it may stay
    const refused = s.apply([element('add', 11), { add: { chain: { ...T, name: 'extra' } } }, element('delete', 99)]);
    await expect(refused).rejects.toBeInstanceOf(NftError);
    await expect(refused).rejects.toThrow(/Could not process rule: No such file or directory/);
    const listing = (await listTable(T.family, T.table, { netns: host.name }))!;
    expect(listing.some((o) => 'chain' in o)).toBe(false);
    expect(await ports()).toEqual([10]);
    await s.apply([element('add', 12)]);
    expect(await ports()).toEqual([10, 12]);
    expect(s.pid).toBe(pid);
    expect(s.stats).toMatchObject({ started: 1, viaSession: 4, fallbacks: 0 });
  });

  it('sees what another process changed between two transactions', async () => {
    const s = session();
    await reset(s);
    await s.apply([element('add', 20)]);
    await applyNft([{ delete: { table: { family: T.family, name: T.table } } }], { netns: host.name });
    await expect(s.apply([element('add', 21)])).rejects.toBeInstanceOf(NftError);
    await reset(s);
    await applyNft([element('add', 22)], { netns: host.name });
    await s.apply([element('delete', 22), element('add', 23)]);
    expect(await ports()).toEqual([23]);
    expect(s.stats.fallbacks).toBe(0);
  });

  it('keeps text outside ASCII (libedit drops such bytes; the session escapes them)', async () => {
    const s = session();
    await reset(s);
    await s.apply([{ add: { chain: { ...T, name: 'c' } } }, { add: { rule: { ...T, chain: 'c', comment: 'café → ü', expr: [{ accept: null }] } } }]);
    const rule = (await listTable(T.family, T.table, { netns: host.name }))!.find((o) => 'rule' in o)?.rule as { comment?: string };
    expect(rule.comment).toBe('café → ü');
    expect(s.stats.fallbacks).toBe(0);
  });

  it('recovers when its process is killed in the middle of a transaction: the transaction goes through nft -j -f, the next starts a new process', async () => {
    const s = session();
    await reset(s);
    const first = s.pid!;
    // stopped, the process cannot answer; killed, it never will
    process.kill(first, 'SIGSTOP');
    const pending = s.apply([element('add', 30)]);
    await new Promise((resolve) => setImmediate(resolve));
    process.kill(first, 'SIGKILL');
    await pending;
    expect(await ports()).toEqual([30]);
    expect(s.stats).toMatchObject({ started: 1, fallbacks: 1 });
    expect(s.stats.lastFailure).toMatch(/nft -i ended \(SIGKILL\)/);
    await s.apply([element('add', 31)]);
    expect(await ports()).toEqual([30, 31]);
    expect(s.stats).toMatchObject({ started: 2, fallbacks: 1 });
    expect(s.pid).not.toBe(first);
    expect(exists(first)).toBe(false);
  });

  it('ends a process that gives no answer in time (by its PID) and applies the transaction through nft -j -f', async () => {
    const s = session({ timeoutMs: 300 });
    await reset(s);
    const stuck = s.pid!;
    process.kill(stuck, 'SIGSTOP');
    await s.apply([element('add', 40)]);
    expect(await ports()).toEqual([40]);
    expect(s.stats.lastFailure).toMatch(/no answer in 300 ms/);
    expect(s.pid).toBeUndefined();
    // a stopped process takes SIGKILL too
    for (let i = 0; i < 100 && exists(stuck); i++) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(exists(stuck)).toBe(false);
  });

  it('sends a transaction bigger than its line limit through nft -j -f', async () => {
    const s = session({ maxLineBytes: 400 });
    await reset(s);
    const many = Array.from({ length: 100 }, (_, i) => 1000 + i);
    await s.apply([element('add', ...many)]);
    expect(await ports()).toEqual(many);
    expect(s.stats).toMatchObject({ viaSession: 1, oneShot: 1 });
  });

  it('replaces its process after `recycleBytes` of transactions, the old one gone', async () => {
    const s = session({ recycleBytes: 1 });
    await reset(s);
    expect(s.pid).toBeUndefined();
    await s.apply([element('add', 50)]);
    expect(await ports()).toEqual([50]);
    expect(s.stats).toMatchObject({ started: 2, viaSession: 2, fallbacks: 0 });
  });

  it('leaves no nft process after close, and later transactions start none', async () => {
    const s = session();
    await reset(s);
    const pid = s.pid!;
    expect(await pidsInNamespace()).toContain(pid);
    await s.close();
    expect(exists(pid)).toBe(false);
    expect(await pidsInNamespace()).toEqual([]);
    await s.apply([element('add', 60)]);
    expect(await ports()).toEqual([60]);
    expect(s.stats).toMatchObject({ oneShot: 1 });
    expect(await pidsInNamespace()).toEqual([]);
    await s.close();
  });

  it('a Dataplane sends its small transactions through its session and leaves no process after close', async () => {
    const dp = new Dataplane({ netns: host.name });
    await dp.remove();
    expect(await pidsInNamespace()).toHaveLength(1);
    await dp.close();
    expect(await pidsInNamespace()).toEqual([]);
  });
});
