/**
 * A real CSV import writes its forwards as a staged import in short transactions: while staged,
 * no reader sees them (list, get, export, desired state, audit log), they hold their host ports
 * and their owners' quotas, and a failure or a stopped controller leaves nothing behind.
 * On PGlite and PostgreSQL.
 */
import { sql } from 'drizzle-orm';
import { beforeAll, describe, expect, it } from 'vitest';
import { rowsOf, type Store } from '../src/db/database.js';
import { PortForwardImportService } from '../src/services/port-forward-import-service.js';
import { ERROR_FIELDS, type Client } from '../src/testing/api.js';
import { createPool } from '../src/testing/fixtures.js';
import { storeBackends } from '../src/testing/stores.js';
import { useStoreApi } from './support/suite.js';
import { createContainer } from '../src/server.js';

const backends = await storeBackends();

const IMPORT = `mutation($input: ImportPortForwardsInput!) { importPortForwards(input: $input) { __typename
  ... on ImportPortForwardsPayload { result { applied created } } ${ERROR_FIELDS} } }`;
const CREATE = `mutation($input: CreatePortForwardInput!) { createPortForward(input: $input) { __typename ... on CreatePortForwardPayload { portForward { id } } ${ERROR_FIELDS} } }`;

/** Ids of the forwards that staged (unfinished) imports have written. */
async function stagedIds(store: Store): Promise<string[]> {
  const rows = await store.db.execute(
    sql`select id from port_forwards where import_id in (select id from port_forward_imports where state = 'staged') order by host_port_start`,
  );
  return rowsOf<{ id: string }>(rows).map((r) => r.id);
}

async function count(store: Store, query: ReturnType<typeof sql>): Promise<number> {
  return Number(rowsOf<{ n: number }>(await store.db.execute(query))[0]!.n);
}

/**
 * Runs `whileStaged` once, after the first committed transaction that leaves staged rows behind
 * (the import continues when it returns); returns a function that restores the store.
 */
function onceStaged(store: Store, whileStaged: (ids: string[]) => Promise<void>): () => void {
  const db = store.db as { transaction: Store['db']['transaction'] };
  const original = db.transaction;
  let done = false;
  let busy = false;
  db.transaction = (async (work: never, config: never) => {
    const result = await original.call(store.db, work, config);
    if (!done && !busy) {
      busy = true;
      try {
        const ids = await stagedIds(store);
        if (ids.length > 0) {
          done = true;
          await whileStaged(ids);
        }
      } finally {
        busy = false;
      }
    }
    return result;
  }) as never;
  return () => {
    db.transaction = original;
  };
}

const csvOf = (rows: string[]) => `protocol,host_port,vm_ip,vm_port,note\n${rows.join('\n')}\n`;

describe.each(backends)('a staged CSV import on $name', (backend) => {
  const ctx = useStoreApi(backend, 'gw-staged');
  let carol: { client: Client; id: string };
  let carolVm: string;
  let adminVm: string;

  beforeAll(async () => {
    await createPool(ctx.api.admin, { name: 'staged-pool', kind: 'PRIVATE', network: 'br-st', cidr: '10.77.0.0/24', gateway: '10.77.0.1' });
    carol = await ctx.api.tenant('carol-st', { quotaPortForwards: 1_005 });
    const r = await ctx.api.admin(
      `mutation($h: ID!, $o: ID!) { createInstance(input: { hostId: $h, ownerId: $o, name: "carol-vm", nics: [{ network: "br-st", addresses: ["10.77.0.5"] }] }) { ... on CreateInstancePayload { instance { id } } ${ERROR_FIELDS} } }`,
      { h: ctx.hostId, o: carol.id },
    );
    carolVm = r.data!.createInstance.instance.id;
    const a = await ctx.api.admin(
      `mutation($h: ID!) { createInstance(input: { hostId: $h, name: "admin-vm", nics: [{ network: "br-st", addresses: ["10.77.0.6"] }] }) { ... on CreateInstancePayload { instance { id } } ${ERROR_FIELDS} } }`,
      { h: ctx.hostId },
    );
    adminVm = a.data!.createInstance.instance.id;
  });

  const hostRevision = async () =>
    Number(rowsOf<{ r: number }>(await ctx.api.store.db.execute(sql`select desired_revision as r from hosts where id = ${ctx.hostId}`))[0]!.r);
  const rowsFrom = (first: number, n: number, address = '10.77.0.5') => csvOf(Array.from({ length: n }, (_, i) => `tcp,${first + i},${address},80,row ${i}`));

  it('shows no reader a staged row, holds its port and its quota, and shows everything after the commit', async () => {
    const seen: Record<string, unknown> = {};
    const restore = onceStaged(ctx.api.store, async (ids) => {
      const staged = ids[0]!;
      const list = await carol.client(`query($h: ID) { portForwards(hostId: $h, first: 100) { edges { node { id } } } }`, { h: ctx.hostId });
      seen.list = list.data!.portForwards.edges.length;
      seen.get = (await carol.client(`query($id: ID!) { portForward(id: $id) { id } }`, { id: staged })).data!.portForward;
      seen.adminGet = (await ctx.api.admin(`query($id: ID!) { portForward(id: $id) { id } }`, { id: staged })).data!.portForward;
      const exported = (await carol.client(`query($h: ID!) { exportPortForwards(hostId: $h) }`, { h: ctx.hostId })).data!.exportPortForwards as string;
      seen.exportRows = exported.trim().split('\r\n').length - 1;
      const state = (await ctx.api.admin(`query($h: ID!) { hostDesiredState(hostId: $h) { document } }`, { h: ctx.hostId })).data!.hostDesiredState;
      seen.desiredForwards = (state.document.instances as { portForwards: unknown[] }[]).reduce((n, i) => n + i.portForwards.length, 0);
      const audit = await carol.client(`query($id: String) { auditLog(objectId: $id) { edges { node { id } } } }`, { id: staged });
      seen.audit = audit.data!.auditLog.edges.length;
      // the first staged row's port is taken (it was written first: the lowest port of the file)
      const clash = await carol.client(CREATE, { input: { instanceId: carolVm, protocol: 'TCP', hostPort: '21000', targetPort: '22' } });
      seen.clash = clash.data!.createPortForward;
      // carol may have 1,005 forwards: the import reserves 1,000, two more fit, the rest is refused
      seen.creates = [];
      for (const port of [30001, 30002, 30003, 30004, 30005, 30006]) {
        const r = await carol.client(CREATE, { input: { instanceId: carolVm, protocol: 'TCP', hostPort: String(port), targetPort: '22' } });
        (seen.creates as string[]).push(r.data!.createPortForward.__typename);
      }
      seen.revisionWhileStaged = await hostRevision();
      seen.stagedStamps = await count(
        ctx.api.store,
        sql`select count(*) as n from port_forwards where id in ${sql.raw(`('${ids.join("','")}')`)} and changed_revision < ${seen.revisionWhileStaged}`,
      );
    });
    try {
      const r = await carol.client(IMPORT, { input: { hostId: ctx.hostId, csv: rowsFrom(21_000, 1_000) } });
      expect(r.data!.importPortForwards).toMatchObject({ __typename: 'ImportPortForwardsPayload', result: { applied: true, created: 1_000 } });
    } finally {
      restore();
    }
    expect(seen).toMatchObject({ list: 0, get: null, adminGet: null, exportRows: 0, desiredForwards: 0, audit: 0 });
    expect(seen.clash).toMatchObject({ __typename: 'PortConflictError', code: 'PORT_CONFLICT', field: 'input.hostPort' });
    expect(seen.creates).toEqual([
      'CreatePortForwardPayload',
      'CreatePortForwardPayload',
      'CreatePortForwardPayload',
      'CreatePortForwardPayload',
      'CreatePortForwardPayload',
      'QuotaExceededError',
    ]);
    // after the commit: every reader sees the 1,000 forwards (and the 5 made meanwhile)
    const exported = (await carol.client(`query($h: ID!) { exportPortForwards(hostId: $h) }`, { h: ctx.hostId })).data!.exportPortForwards as string;
    expect(exported.trim().split('\r\n').length - 1).toBe(1_005);
    const state = (await ctx.api.admin(`query($h: ID!) { hostDesiredState(hostId: $h) { document } }`, { h: ctx.hostId })).data!.hostDesiredState;
    expect((state.document.instances as { portForwards: unknown[] }[]).reduce((n, i) => n + i.portForwards.length, 0)).toBe(1_005);
    const [first] = rowsOf<{ id: string }>(await ctx.api.store.db.execute(sql`select id from port_forwards where host_port_start = 21000`));
    expect((await carol.client(`query($id: ID!) { portForward(id: $id) { id } }`, { id: first!.id })).data!.portForward).toEqual({ id: first!.id });
    const audit = await carol.client(`query($id: String) { auditLog(objectId: $id) { edges { node { action } } } }`, { id: first!.id });
    expect(audit.data!.auditLog.edges).toEqual([{ node: { action: 'portForward.create' } }]);
    expect(await stagedIds(ctx.api.store)).toEqual([]);
    // the staged rows carried the revision the import opened at, older than the creates made meanwhile;
    // the commit stamps them with its own, so a stream that sent those creates' revision finds them
    expect(seen.stagedStamps).toBeGreaterThan(0);
    const committed = await hostRevision();
    expect(committed).toBeGreaterThan(seen.revisionWhileStaged as number);
    expect(
      await count(
        ctx.api.store,
        sql`select count(*) as n from port_forwards where host_port_start between 21000 and 21999 and changed_revision = ${committed}`,
      ),
    ).toBe(1_000);
  });

  it('leaves nothing when a forward created meanwhile takes a port the import had planned', async () => {
    const forwardsBefore = await count(ctx.api.store, sql`select count(*)::int as n from port_forwards`);
    const auditBefore = await count(ctx.api.store, sql`select count(*)::int as n from audit_log`);
    let taken: unknown;
    const restore = onceStaged(ctx.api.store, async () => {
      // the file's last row is written last (PostgreSQL stages 2,000 rows a transaction): this create gets there first
      const r = await ctx.api.admin(CREATE, { input: { instanceId: adminVm, protocol: 'TCP', hostPort: '42999', targetPort: '22' } });
      taken = r.data!.createPortForward.__typename;
    });
    let answer: Record<string, unknown>;
    try {
      answer = (await ctx.api.admin(IMPORT, { input: { hostId: ctx.hostId, csv: rowsFrom(40_000, 3_000, '10.77.0.6') } })).data!.importPortForwards;
    } finally {
      restore();
    }
    expect(taken).toBe('CreatePortForwardPayload');
    expect(answer).toMatchObject({ code: 'CONFLICT', field: 'input.csv' });
    expect(answer.message).toMatch(/nothing was imported/);
    // only the concurrent create (and its audit entry) remains
    expect(await count(ctx.api.store, sql`select count(*)::int as n from port_forwards`)).toBe(forwardsBefore + 1);
    expect(await count(ctx.api.store, sql`select count(*)::int as n from audit_log where action = 'portForward.create'`)).toBeLessThanOrEqual(auditBefore + 1);
    expect(
      await count(
        ctx.api.store,
        sql`select count(*)::int as n from audit_log where import_id is not null and import_id not in (select id from port_forward_imports)`,
      ),
    ).toBe(0);
    expect(await count(ctx.api.store, sql`select count(*)::int as n from port_forward_imports where state <> 'committed'`)).toBe(0);
    const exported = (await ctx.api.admin(`query($h: ID!) { exportPortForwards(hostId: $h) }`, { h: ctx.hostId })).data!.exportPortForwards as string;
    expect(exported).not.toMatch(/^tcp,40000,/m);
    expect(exported).toMatch(/^tcp,42999,10\.77\.0\.6,22,/m);
  });

  it('removes an import a stopped controller left staged, when the controller starts', async () => {
    const forwardsBefore = await count(ctx.api.store, sql`select count(*)::int as n from port_forwards`);
    const auditBefore = await count(ctx.api.store, sql`select count(*)::int as n from audit_log`);
    let stopped: () => void = () => {};
    // the controller "stops" after its first staging transaction: the import never goes on
    const restore = onceStaged(ctx.api.store, () => new Promise<void>((resolve) => (stopped = resolve)));
    const importing = ctx.api.admin(IMPORT, { input: { hostId: ctx.hostId, csv: rowsFrom(50_000, 1_000, '10.77.0.6') } });
    while ((await stagedIds(ctx.api.store)).length === 0) await new Promise((r) => setTimeout(r, 20));
    restore();
    const left = (await stagedIds(ctx.api.store)).length;
    expect(left).toBeGreaterThan(0);
    // on PostgreSQL only imports untouched for two minutes are leftovers (replicas may be importing)
    if (ctx.api.store.kind === 'postgres') {
      expect(await createContainer(ctx.api.store).resolve(PortForwardImportService).removeLeftovers('postgres')).toBe(0);
      await ctx.api.store.db.execute(sql`update port_forward_imports set touched_at = now() - interval '3 minutes' where state = 'staged'`);
    }
    // what `startController` runs before it serves
    expect(await createContainer(ctx.api.store).resolve(PortForwardImportService).removeLeftovers(ctx.api.store.kind)).toBe(1);
    expect(await count(ctx.api.store, sql`select count(*)::int as n from port_forwards`)).toBe(forwardsBefore);
    expect(await count(ctx.api.store, sql`select count(*)::int as n from audit_log`)).toBe(auditBefore);
    expect(await count(ctx.api.store, sql`select count(*)::int as n from port_forward_imports where state <> 'committed'`)).toBe(0);
    // the import that was cut off, if it ever runs on, finds itself removed and answers so
    stopped();
    const answer = (await importing).data!.importPortForwards;
    expect(answer).toMatchObject({ code: 'CONFLICT', field: 'input.csv' });
    expect(await count(ctx.api.store, sql`select count(*)::int as n from port_forwards`)).toBe(forwardsBefore);
  });
});
