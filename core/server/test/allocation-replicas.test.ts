/**
 * Two controller processes on one PostgreSQL database allocate from one pool at the same time,
 * 16 concurrent requests each, until it is full: every free address is handed out exactly once,
 * the quota holds exactly, and released addresses are found again by the next burst.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { createInterface, type Interface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'drizzle-orm';
import { openStore, rowsOf, type Store } from '../src/db/database.js';
import { createContainer } from '../src/server.js';
import { PoolService } from '../src/services/pool-service.js';
import { systemActor } from '../src/auth/actor.js';
import { createTestApi, type TestApi } from '../src/testing/api.js';
import { createHost, createNics, createPool } from '../src/testing/fixtures.js';
import { createTestDatabase, postgresReachable, REQUIRE_SYSTEM, type TestDatabase } from '../src/testing/stores.js';

const WORKER = fileURLToPath(new URL('./support/allocation-worker.ts', import.meta.url));
const WORKERS = 16;
const QUOTA = 40;

interface Round {
  allocated: { nicId: string; address: string }[];
  quotaRefusals: number;
  exhausted: number;
}

class Controller {
  private readonly lines: AsyncIterator<string>;
  private readonly reader: Interface;

  constructor(private readonly proc: ChildProcessByStdio<Writable, Readable, null>) {
    this.reader = createInterface({ input: proc.stdout });
    this.lines = this.reader[Symbol.asyncIterator]();
  }

  async line(): Promise<string> {
    const next = await this.lines.next();
    if (next.done) throw new Error(`controller process ${this.proc.pid} ended`);
    return next.value;
  }

  async round(): Promise<Round> {
    this.proc.stdin.write('go\n');
    return JSON.parse(await this.line()) as Round;
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode !== null) return;
    const exited = new Promise((resolve) => this.proc.once('exit', resolve));
    this.proc.stdin.end('exit\n');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
    this.reader.close();
  }
}

const reachable = (await postgresReachable()) || REQUIRE_SYSTEM;

describe.skipIf(!reachable)('two controller processes allocating from one pool on PostgreSQL', () => {
  let database: TestDatabase;
  let store: Store;
  let api: TestApi;
  let poolId: string;
  let carolId: string;
  let carolNics: string[];
  const controllers: Controller[] = [];

  const count = async (query: ReturnType<typeof sql>) => Number(rowsOf<{ n: number }>(await store.db.execute(query))[0]!.n);
  const carolHolds = () => count(sql`select count(*)::int as n from ip_allocations where owner_id = ${carolId}::uuid and kind = 'allocated'`);
  const carolUsage = () => count(sql`select coalesce(sum(used), 0)::int as n from address_usage where owner_id = ${carolId}::uuid and family = 4`);

  beforeAll(async () => {
    database = await createTestDatabase();
    store = await openStore({ kind: 'postgres', url: database.url, maxConnections: 4 });
    api = await createTestApi(store);
    const h1 = await createHost(api.admin, 'replica-h1');
    const h2 = await createHost(api.admin, 'replica-h2');
    poolId = await createPool(api.admin, { name: 'replicas', kind: 'PRIVATE', network: 'br-r', cidr: '10.9.0.0/24', gateway: '10.9.0.1' });
    carolId = (await api.tenant('carol', { quotaIpv4Addresses: QUOTA })).id;
    carolNics = await createNics(api.admin, h1, carolId, 'carol-vm', 'br-r', 2);
    const freeNics = [
      ...(await createNics(api.admin, h1, undefined, 'admin-vm-1', 'br-r', 2)),
      ...(await createNics(api.admin, h2, undefined, 'admin-vm-2', 'br-r', 2)),
    ];
    const job = JSON.stringify({ url: database.url, workers: WORKERS, quotaNics: carolNics, freeNics });
    for (let i = 0; i < 2; i++) {
      const proc = spawn(process.execPath, ['--import', 'tsx', WORKER, job], { stdio: ['pipe', 'pipe', 'inherit'] });
      controllers.push(new Controller(proc));
    }
    for (const c of controllers) expect(await c.line()).toBe('ready');
  });

  afterAll(async () => {
    await Promise.all(controllers.map((c) => c.stop()));
    await store?.close();
    await database?.drop();
  });

  it('hands out every free address of the pool exactly once and holds the quota exactly', async () => {
    const rounds = await Promise.all(controllers.map((c) => c.round()));
    const allocated = rounds.flatMap((r) => r.allocated);
    const addresses = allocated.map((a) => a.address);
    // a /24 less network, broadcast and gateway
    expect(allocated).toHaveLength(253);
    expect(new Set(addresses).size).toBe(253);
    expect(addresses).not.toContain('10.9.0.1');
    for (const r of rounds) {
      expect(r.allocated.length).toBeGreaterThan(0);
      expect(r.exhausted).toBe(WORKERS);
    }
    expect(allocated.filter((a) => carolNics.includes(a.nicId))).toHaveLength(QUOTA);
    expect(rounds.reduce((n, r) => n + r.quotaRefusals, 0)).toBeGreaterThan(0);
    expect(await count(sql`select count(*)::int as n from ip_allocations where pool_id = ${poolId}::uuid and kind = 'allocated'`)).toBe(253);
    expect(
      await count(sql`select count(*)::int as n from (select slot from ip_allocations where pool_id = ${poolId}::uuid group by slot having count(*) > 1) d`),
    ).toBe(0);
    expect(await carolHolds()).toBe(QUOTA);
    expect(await carolUsage()).toBe(QUOTA);
    const pool = await api.admin(`query($id: ID!) { ipPool(id: $id) { utilisation { allocated free } } }`, { id: poolId });
    expect(pool.data!.ipPool.utilisation).toEqual({ allocated: '253', free: '0' });
  });

  it('gives released addresses out again, once each, to the next burst from both processes', async () => {
    const pools = createContainer(store).resolve(PoolService);
    const actor = systemActor('replicas-test');
    const rows = rowsOf<{ id: string; address: string; owner_id: string }>(
      await store.db.execute(
        sql`select id, address, owner_id from ip_allocations where pool_id = ${poolId}::uuid and kind = 'allocated' order by slot desc limit 3`,
      ),
    );
    const carols = rowsOf<{ id: string; address: string }>(
      await store.db.execute(sql`select id, address from ip_allocations where owner_id = ${carolId}::uuid order by slot limit 3`),
    );
    const released = [...rows.filter((r) => r.owner_id !== carolId), ...carols];
    await Promise.all(released.map((r) => pools.release(actor, r.id)));
    expect(await carolUsage()).toBe(await carolHolds());

    const rounds = await Promise.all(controllers.map((c) => c.round()));
    const again = rounds.flatMap((r) => r.allocated.map((a) => a.address));
    expect(again.sort()).toEqual(released.map((r) => r.address).sort());
    expect(await carolHolds()).toBeLessThanOrEqual(QUOTA);
    expect(await carolUsage()).toBe(await carolHolds());
    expect(await count(sql`select count(*)::int as n from ip_allocations where pool_id = ${poolId}::uuid and kind = 'allocated'`)).toBe(253);
  });
});
