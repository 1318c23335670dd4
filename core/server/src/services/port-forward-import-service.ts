/**
 * CSV bulk import and export of port forwards, in the reference format
 * `protocol,host_port,vm_ip,vm_port,note` plus the optional columns `host_address`,
 * `source_cidrs` (prefixes separated by spaces or semicolons), `rate_limit` (new-connection
 * limits: `per_source=50 total=1000 burst=10 action=drop`, or a bare number for per_source; empty:
 * none) and `targets` (several targets: `10.0.0.5*2 10.0.0.6*1 affinity`, addresses of instances of
 * the owner with optional weights and the word `affinity`, vm_ip among them; empty: vm_ip alone). Files without the optional columns import as before. Ports may be ranges ("8000-8010");
 * an empty host_port picks the lowest free port(s).
 *
 * The plan is computed in memory against the host's forwards loaded once, so 10,000 rows cost a
 * few queries, not 10,000 round trips. A dry run returns the per-row plan. The real import is all
 * or nothing, without holding the store: it reserves the owners' quotas in one short transaction,
 * writes its forwards as a staged import in transactions of a few milliseconds each (the rows hold
 * their host ports but no reader sees them, see `port_forward_imports`), and makes them visible
 * with one commit. When anything fails on the way its rows are removed; a controller stopped
 * half-way leaves a staged import that the next start removes.
 */
import { and, asc, eq, inArray, ne, sql } from 'drizzle-orm';
import { inject, injectable } from 'tsyringe';
import { isAdmin, type Actor } from '../auth/actor.js';
import { csvCell, csvCellValue, csvRecords, type CsvRecord, type CsvSyntaxError } from '../support/csv.js';
import { WorkBudget } from '../support/work-budget.js';
import { sharesOneConnection, type Database, type Executor } from '../db/database.js';
import {
  auditLog,
  forwardIsVisible,
  hosts,
  instances,
  ipAllocations,
  nics,
  portForwardImports,
  portForwards,
  users,
  type ListeningSocketJson,
} from '../db/schema.js';
import { ConflictError, GatehouseError, NotFoundError, ValidationError, postgresErrorOf } from '../support/errors.js';
import { newId } from '../support/ids.js';
import type { Host } from './host-service.js';
import { controllerAddressCheck } from '../net/controller-addresses.js';
import { formatIp, parseIp } from '../net/ip.js';
import { hostListeningSockets, listeningClash, listeningText } from './port-audit.js';
import { DatabaseToken } from '../di/tokens.js';
import { validId, type PortRange } from '../support/validate.js';
import type { AuditEntry } from '../events/event-payloads.js';
import { AuditService } from './audit-service.js';
import { lockOwner } from './ownership.js';
import { bumpHostRevision } from './revision.js';
import { PortForwardService, forwardQuotaProblem, type PortForward } from './port-forward-service.js';
import {
  forwardRow,
  heldPorts,
  keysOverlap,
  placeForward,
  portRangeText,
  type ForwardProtocol,
  type ForwardTarget,
  type OverlapKeys,
  type PlacedForward,
  type RateLimitSpec,
  type SpecField,
} from './port-forward-spec.js';
import type { DesiredRateLimit } from '@gatehouse/sdk';
import type { ForwardBalanceJson } from '../db/schema.js';
import { checkedBalance, parseTargetsCell, sameBalance, targetsCell, validWeight, type ResolvedTarget } from './port-forward-balance.js';

/** What the import does with a row. */
export type ImportAction = 'create' | 'unchanged' | 'conflict' | 'invalid';

/** One row of the plan. */
export interface ImportRow {
  /** Line number in the file (the header is line 1). */
  row: number;
  action: ImportAction;
  reason: string | null;
  /** The offending column, for invalid and conflicting rows. */
  column: string | null;
  /** The forward as it will be (create), as it is (unchanged), or null. */
  forward: PortForward | null;
}

/** The result of an import or a dry run. */
export interface ImportResult {
  dryRun: boolean;
  applied: boolean;
  rows: ImportRow[];
}

/** Largest accepted file. */
export const MAX_CSV_BYTES = 8 * 1024 * 1024;
/** Most rows in one import. */
export const MAX_CSV_ROWS = 50_000;

const REQUIRED_COLUMNS = ['protocol', 'host_port', 'vm_ip', 'vm_port'] as const;
const OPTIONAL_COLUMNS = ['note', 'host_address', 'source_cidrs', 'rate_limit', 'targets'] as const;
const COLUMN_OF: Record<SpecField, string> = {
  protocol: 'protocol',
  hostPort: 'host_port',
  targetPort: 'vm_port',
  targetAddress: 'vm_ip',
  hostAddress: 'host_address',
  sourceCidrs: 'source_cidrs',
  rateLimit: 'rate_limit',
  targets: 'targets',
  note: 'note',
};
const RATE_LIMIT_KEYS: Record<string, keyof RateLimitSpec> = { per_source: 'perSource', total: 'total', burst: 'burst', action: 'action' };

/** A `rate_limit` cell: `per_source=50 total=1000 burst=10 action=drop` (spaces or semicolons), or a bare number (per_source); null when empty. */
export function parseRateLimitCell(text: string): RateLimitSpec | null | { error: string } {
  if (text === '') return null;
  if (/^\d+$/.test(text)) return { perSource: Number(text) };
  const spec: RateLimitSpec = {};
  for (const part of text.split(/[\s;]+/).filter(Boolean)) {
    const [key, value, extra] = part.split('=');
    const field = RATE_LIMIT_KEYS[key ?? ''];
    if (!field || value === undefined || extra !== undefined) return { error: `"${part}" is not per_source=N, total=N, burst=N or action=drop|reject` };
    if (field === 'action') {
      if (value !== 'drop' && value !== 'reject') return { error: `action "${value}" is not drop or reject` };
      spec.action = value;
    } else {
      if (!/^\d+$/.test(value)) return { error: `${key} "${value}" is not a whole number` };
      spec[field] = Number(value);
    }
  }
  return spec;
}

/** The `rate_limit` cell of a forward's limits (empty without). */
export function rateLimitCell(limit: DesiredRateLimit | null): string {
  if (!limit) return '';
  return [
    limit.perSource !== null ? `per_source=${limit.perSource}` : null,
    limit.total !== null ? `total=${limit.total}` : null,
    `burst=${limit.burst}`,
    `action=${limit.action}`,
  ]
    .filter(Boolean)
    .join(' ');
}

const PROTOCOLS: Record<string, ForwardProtocol> = { tcp: 'tcp', udp: 'udp', both: 'both', 'tcp+udp': 'both' };
/**
 * On PGlite (one connection) staging transactions aim at this long (ms), so a request waiting for
 * the store waits about as long; on PostgreSQL other requests do not wait for them, and each takes
 * the largest batch (small ones made a 50,000-row import 10× slower there: 118 s against 11 s).
 * 10 ms against 25 ms on PGlite (50,000 rows, back to back at load 9): `{ me }` median 27 → 7 ms,
 * max 531 → 170 ms, and the import 42 s → 20 s (fewer rows a transaction cost less per row); 5 ms
 * made the import slower again (36 s).
 */
const STAGE_TX_TARGET_MS = 10;
/**
 * Rows in the first staging transaction on PGlite; later ones are sized from how long the last one
 * took. A row costs PGlite ~0.5–0.8 ms (the forward, its exclusion index, its audit entry): a first
 * batch of 100 held every request for 105 ms (load 10), 20 aim at the target.
 */
const STAGE_FIRST_BATCH = 20;
const STAGE_MIN_BATCH = 20;
const STAGE_MAX_BATCH = 2_000;
/**
 * Rows per INSERT statement in a staging transaction: building a statement is synchronous work
 * (one of 2,000 forwards held the event loop for 100–250 ms on a loaded machine; one of 250 with
 * their audit entries, binding ~8,000 parameters in postgres.js, 30–50 ms at load 10), and the
 * round trip between two statements lets other requests run.
 */
const STAGE_STATEMENT_ROWS = 100;
/** How often a staging transaction refreshes its import's `touchedAt` (an update per batch would pile up row versions). */
const TOUCH_EVERY_MS = 5_000;
/**
 * Staged rows removed per transaction when an import is undone; on PGlite fewer, as every request
 * waits for each (it writes ~100 rows in 10 ms, so 2,000 would hold the store for ~200 ms).
 */
const REMOVE_BATCH = 2_000;
const REMOVE_BATCH_ONE_CONNECTION = 200;
/** A staged import untouched this long on PostgreSQL belongs to a controller that stopped (each staging transaction touches it). */
const STALE_IMPORT_MS = 120_000;
/** Longest a plan may take before the import is refused (50,000 rows plan in well under 2 s). */
const PLAN_BUDGET_MS = 30_000;

/**
 * A file whose header was read: the text and the column positions. Its rows are read as they are
 * planned (`dataRecords`), not kept: 50,000 records alive through the plan were copied by every
 * minor garbage collection while it ran.
 */
interface ParsedFile {
  csv: string;
  columns: Map<string, number>;
}

/** The records and syntax errors after the header, in file order. */
function* dataRecords(file: ParsedFile): Generator<CsvRecord | CsvSyntaxError> {
  let header = true;
  for (const r of csvRecords(file.csv)) {
    if (header) header = false;
    else yield r;
  }
}

/** A data row refused as malformed. */
function invalidRow(row: number, column: string | null, reason: string): ImportRow {
  return { row, action: 'invalid', reason, column, forward: null };
}

/** The value of the column at `i` of a record (trimmed, a formula escape undone); empty when the file lacks the column. */
function cellAt(fields: readonly string[], i: number | undefined): string {
  return i === undefined ? '' : csvCellValue(fields[i]!.trim());
}

/** What a plan looks up once for all its rows; the per-row work allocates no closures (50,000 rows). */
interface PlanContext {
  actor: Actor;
  columns: Map<string, number>;
  /** Column positions, undefined for a column the file lacks. */
  at: {
    protocol?: number;
    hostPort?: number;
    vmIp?: number;
    vmPort?: number;
    note?: number;
    hostAddress?: number;
    sourceCidrs?: number;
    rateLimit?: number;
    targets?: number;
  };
  host: typeof hosts.$inferSelect;
  targets: Map<string, (ForwardTarget & { controller: boolean })[]>;
  /** `targets` by a vm_ip cell as written (files repeat their addresses: parsed once each). */
  targetsByCell: Map<string, readonly (ForwardTarget & { controller: boolean })[] | { error: string }>;
  index: PortIndex;
  names: Map<string, string>;
  listening: ListeningSocketJson[] | null;
  createdAt: Date;
}

/** Host ports a forward row holds, per protocol. */
function forwardPorts(f: PortForward): number {
  return heldPorts(f.protocol, { start: f.hostPortStart, end: f.hostPortEnd });
}

/** New forwards and host ports per owner, in owner id order (the lock order). */
function totalsByOwner(creates: readonly ImportRow[]): Map<string, { forwards: number; ports: number }> {
  const totals = new Map<string, { forwards: number; ports: number }>();
  for (const r of creates) {
    const t = totals.get(r.forward!.ownerId) ?? { forwards: 0, ports: 0 };
    t.forwards++;
    t.ports += forwardPorts(r.forward!);
    totals.set(r.forward!.ownerId, t);
  }
  return new Map([...totals].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** A plan's creates and its invalid or conflicting rows, in one pass. */
function sorted(rows: readonly ImportRow[]): { creates: ImportRow[]; problems: ImportRow[] } {
  const creates: ImportRow[] = [];
  const problems: ImportRow[] = [];
  for (const r of rows) {
    if (r.action === 'create') creates.push(r);
    else if (r.action === 'invalid' || r.action === 'conflict') problems.push(r);
  }
  return { creates, problems };
}

/** The distinct owners of some forwards. */
function ownersOf(forwards: readonly PortForward[]): string[] {
  return [...new Set(forwards.map((f) => f.ownerId))];
}

/**
 * A forward of the host (`staged` while another import writes it), or one planned by a row of the
 * file: a planned row is indexed as its own plan (`ImportRow`), not as a copy of its forward.
 */
type Indexed = { readonly forward: PortForward; readonly row?: number; readonly staged?: boolean };
const NONE: readonly Indexed[] = [];

/** The forward of the host that a planned row repeats exactly, among those it clashes with. */
function sameForward(clash: readonly Indexed[], placed: PlacedForward, ports: PortRange, target: ForwardTarget): Indexed | undefined {
  for (const e of clash) {
    const f = e.forward;
    if (
      e.row === undefined &&
      !e.staged &&
      f.protocol === placed.protocol &&
      f.hostAddress === placed.hostAddress &&
      f.hostPortStart === ports.start &&
      f.hostPortEnd === ports.end &&
      f.targetAddressId === target.id &&
      f.targetPortStart === placed.targetPorts.start &&
      sameBalance(f.balance ?? null, placed.balance)
    )
      return e;
  }
  return undefined;
}

/** The column of a spec field, for errors. */
const columnOf = (field: SpecField) => COLUMN_OF[field];

/** Lets queued requests run between two staging transactions. */
const yieldToOthers = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * The host ports taken for one set of overlap keys (protocols × host addresses), and where the
 * last block of each size was found. A plan only ever takes ports, never frees them, so each
 * search resumes where the last one of its size ended: choosing free ports for a whole file
 * costs at most one pass over the port space per (keys, size), not one per row.
 */
class FreePorts {
  private readonly taken = new Uint8Array(65536);
  private readonly resume = new Map<number, number>();

  constructor(
    private readonly host: Host,
    private readonly keys: OverlapKeys,
  ) {
    for (const r of host.reservedPorts) this.take(r);
  }

  /** Marks a forward's host ports taken when its keys overlap these. */
  claim(f: PortForward): void {
    if (keysOverlap(f, this.keys)) this.take({ start: f.hostPortStart, end: f.hostPortEnd });
  }

  /** The lowest free block of `count` consecutive ports in the host's allowed range. */
  lowest(count: number): PortRange | undefined {
    const last = this.host.portRangeEnd;
    let start = Math.max(this.resume.get(count) ?? 0, this.host.portRangeStart);
    let run = 0;
    for (let p = start; p <= last; p++) {
      if (this.taken[p]) {
        run = 0;
        start = p + 1;
      } else if (++run === count) {
        this.resume.set(count, start);
        return { start, end: p };
      }
    }
    this.resume.set(count, last + 1);
    return undefined;
  }

  private take(r: PortRange): void {
    this.taken.fill(1, Math.max(r.start, 0), Math.min(r.end, 65535) + 1);
  }
}

/**
 * Forwards on one host indexed by host port, for overlap checks that cost per port, not per
 * forward. A port holds its one forward, or a list when several share it (other protocols or
 * addresses): a 50,000-row plan keeps no list, map entry or copy per row (what it keeps alive is
 * copied by every minor garbage collection while the plan runs).
 */
class PortIndex {
  private readonly byPort: (Indexed | Indexed[] | undefined)[] = new Array(65536);
  private readonly all: Indexed[] = [];
  private readonly searches = new Map<string, FreePorts>();
  private lastSearch: { keys: OverlapKeys; search: FreePorts } | undefined;

  constructor(private readonly host: Host) {}

  add(entry: Indexed): void {
    const { hostPortStart, hostPortEnd } = entry.forward;
    for (let p = Math.max(hostPortStart, 0); p <= Math.min(hostPortEnd, 65535); p++) {
      const held = this.byPort[p];
      if (held === undefined) this.byPort[p] = entry;
      else if (Array.isArray(held)) held.push(entry);
      else this.byPort[p] = [held, entry];
    }
    this.all.push(entry);
    for (const search of this.searches.values()) search.claim(entry.forward);
  }

  /** Forwards overlapping the keys on any of the ports, each once (no array when there are none: most rows of a file). */
  overlapping(keys: PlacedForward, ports: PortRange): readonly Indexed[] {
    let found: Indexed[] | undefined;
    // a forward over several ports is met once per port
    let seen: Set<Indexed> | undefined;
    const several = ports.start !== ports.end;
    for (let p = Math.max(ports.start, 0); p <= Math.min(ports.end, 65535); p++) {
      const held = this.byPort[p];
      if (held === undefined) continue;
      const list = Array.isArray(held) ? held : [held];
      for (const e of list) {
        if (!keysOverlap(e.forward, keys)) continue;
        if (several) {
          seen ??= new Set();
          if (seen.has(e)) continue;
          seen.add(e);
        }
        (found ??= []).push(e);
      }
    }
    return found ?? NONE;
  }

  /** The lowest free block of `count` host ports for a forward with these keys. */
  lowestFree(keys: OverlapKeys, count: number): PortRange | undefined {
    // the rows of a file mostly share their keys: the last search is reused without building its id
    const last = this.lastSearch;
    if (
      last &&
      last.keys.protoLo === keys.protoLo &&
      last.keys.protoHi === keys.protoHi &&
      last.keys.addrLo === keys.addrLo &&
      last.keys.addrHi === keys.addrHi
    )
      return last.search.lowest(count);
    const id = `${keys.protoLo}/${keys.protoHi}/${keys.addrLo}/${keys.addrHi}`;
    let search = this.searches.get(id);
    const own = { protoLo: keys.protoLo, protoHi: keys.protoHi, addrLo: keys.addrLo, addrHi: keys.addrHi };
    if (!search) {
      search = new FreePorts(this.host, own);
      for (const e of this.all) search.claim(e.forward);
      this.searches.set(id, search);
    }
    this.lastSearch = { keys: own, search };
    return search.lowest(count);
  }
}

@injectable()
export class PortForwardImportService {
  constructor(
    @inject(DatabaseToken) private readonly db: Database,
    @inject(AuditService) private readonly audit: AuditService,
    @inject(PortForwardService) private readonly forwards: PortForwardService,
  ) {}

  /**
   * Plans the CSV against the host and, unless `dryRun`, applies it all or not at all. The plan is
   * made outside any transaction, yielding to other requests as it goes; the import then writes
   * in one transaction, planning again inside it only when the host changed meanwhile.
   */
  async import(actor: Actor, input: { hostId: string; csv: string; dryRun?: boolean | null }): Promise<ImportResult> {
    const hostId = validId('input.hostId', input.hostId);
    const dryRun = input.dryRun ?? false;
    if (typeof input.csv !== 'string' || Buffer.byteLength(input.csv) > MAX_CSV_BYTES) {
      throw new ValidationError(
        'input.csv',
        `${Buffer.byteLength(input.csv ?? '')} bytes`,
        `is larger than the ${MAX_CSV_BYTES / 1024 / 1024} MiB limit; split the file`,
      );
    }
    const [header] = csvRecords(input.csv);
    if (!header || 'problem' in header || header.line !== 1)
      throw new ValidationError('input.csv', 'row 1', `needs a header row: ${[...REQUIRED_COLUMNS, ...OPTIONAL_COLUMNS].join(',')}`);
    const file = { csv: input.csv, columns: this.columnsOf(header) };

    const planned = await this.plan(this.db, actor, hostId, file);
    if (dryRun) {
      await this.markOverQuota(this.db, planned.rows);
      return { dryRun, applied: false, rows: planned.rows };
    }

    const opened = await this.open(actor, hostId, file, planned);
    if (opened.creates.length > 0)
      await this.write(
        actor,
        hostId,
        opened.importId,
        opened.creates.map((r) => r.forward!),
      );
    return { dryRun, applied: true, rows: opened.rows };
  }

  /**
   * One short transaction: checks the plan (planning again under the host lock only when the host
   * changed since), reserves the owners' quotas and opens a staged import for the creates.
   * Locks in the controller's order, owners (in id order) before the host: the owners are those of
   * the plan made before; when the plan made again under the host lock needs an owner not locked,
   * the transaction is given up and run again with that owner (rare: a target changed hands).
   */
  private async open(
    actor: Actor,
    hostId: string,
    file: ParsedFile,
    planned: { rows: ImportRow[]; revision: number },
  ): Promise<{ rows: ImportRow[]; creates: ImportRow[]; importId: string }> {
    // 50,000 rows take a few ms a pass: made once for the plan made before, not again in the transaction
    const before = sorted(planned.rows);
    const totalsBefore = totalsByOwner(before.creates);
    let ownerIds = [...totalsBefore.keys()];
    // on PGlite a query does not give the event loop a turn (its promises settle at once): each step
    // of a large import ends with a yield, or the passes over the rows and the transactions after
    // the plan ran as one (145 ms after a 50,000-row plan)
    await yieldToOthers();
    for (let attempt = 0; ; attempt++) {
      type Opened = { rows: ImportRow[]; creates: ImportRow[]; importId: string; revision: number };
      const opened = await this.db.transaction(async (tx): Promise<Opened | { relockWith: string[] }> => {
        const owners = new Map<string, Awaited<ReturnType<typeof lockOwner>>>();
        for (const ownerId of ownerIds) owners.set(ownerId, await lockOwner(tx, ownerId));
        const [host] = await tx.select().from(hosts).where(eq(hosts.id, hostId)).for('update');
        if (!host) throw new NotFoundError('input.hostId', hostId, 'host');
        // any change to the host's forwards or targets bumps its revision: the plan still holds when it did not move
        const holds = host.desiredRevision === planned.revision;
        const { rows } = holds ? planned : await this.plan(tx, actor, hostId, file);
        const { creates, problems } = holds ? before : sorted(rows);
        if (problems.length > 0) {
          const first = problems.slice(0, 5).map((p) => `row ${p.row}${p.column ? ` ${p.column}` : ''}: ${p.reason}`);
          throw new ValidationError(
            'input.csv',
            `row ${problems[0]!.row}`,
            `has ${problems.length} invalid or conflicting row(s), nothing was imported (run with dryRun: true for the full plan): ${first.join('; ')}`,
          );
        }
        const importId = newId();
        const revision = host.desiredRevision + 1;
        if (creates.length === 0) return { rows, creates, importId, revision };
        const totals = holds ? totalsBefore : totalsByOwner(creates);
        const unlocked = [...totals.keys()].filter((id) => !owners.has(id));
        if (unlocked.length > 0) return { relockWith: [...new Set([...ownerIds, ...unlocked])].sort() };
        const reserved: Record<string, { forwards: number; ports: number }> = {};
        for (const [ownerId, adding] of totals) {
          await this.forwards.checkQuota(tx, owners.get(ownerId)!, adding, 'input.csv', `${creates.length} new forwards`);
          reserved[ownerId] = adding;
        }
        await tx.insert(portForwardImports).values({ id: importId, hostId, actorUserId: actor.userId, state: 'staged', forwards: creates.length, reserved });
        return { rows, creates, importId, revision };
      });
      if (!('relockWith' in opened)) {
        await yieldToOthers();
        // outside the transaction (on PGlite every request waits for one)
        for (const r of opened.creates) {
          r.forward!.importId = opened.importId;
          r.forward!.changedRevision = opened.revision;
        }
        await yieldToOthers();
        return opened;
      }
      // the owners only grow from one attempt to the next, and a file names finitely many
      if (attempt >= 3) throw new ConflictError('input.csv', "the targets' owners", 'kept changing while the import was opened; run it again');
      ownerIds = opened.relockWith;
    }
  }

  /**
   * Writes the staged import's forwards and their audit entries in short transactions, yielding
   * between them, then makes them visible with the host's revision bump in one commit. Removes the
   * staged rows when anything fails.
   */
  private async write(actor: Actor, hostId: string, importId: string, forwards: PortForward[]): Promise<void> {
    const cancelled = () =>
      new ConflictError(
        'input.csv',
        `${forwards.length} new forwards`,
        'were stopped while they were written (a target address was removed, or the controller is stopping); nothing was imported, run it again',
      );
    const entries: AuditEntry[] = [];
    try {
      const oneConnection = sharesOneConnection(this.db);
      let batch = oneConnection ? STAGE_FIRST_BATCH : STAGE_MAX_BATCH;
      let touched = performance.now();
      for (let i = 0; i < forwards.length;) {
        const slice = forwards.slice(i, i + batch);
        const started = performance.now();
        await this.db.transaction(async (tx) => {
          // the share lock keeps a removal from starting until this batch is in (it then removes the batch too)
          const [open] = await tx.select({ state: portForwardImports.state }).from(portForwardImports).where(eq(portForwardImports.id, importId)).for('share');
          if (open?.state !== 'staged') throw cancelled();
          // the inserts' foreign keys take key-share locks on the owners' rows after the host's:
          // taken first, in id order, they wait for a forward being created by an owner (which holds
          // its owner's row and then wants the host) before this transaction holds anything it needs
          await tx
            .select({ id: users.id })
            .from(users)
            .where(inArray(users.id, ownersOf(slice)))
            .orderBy(users.id)
            .for('key share');
          if (started - touched > TOUCH_EVERY_MS) {
            await tx.update(portForwardImports).set({ touchedAt: new Date() }).where(eq(portForwardImports.id, importId));
            touched = started;
          }
          for (let j = 0; j < slice.length; j += STAGE_STATEMENT_ROWS) {
            const part = slice.slice(j, j + STAGE_STATEMENT_ROWS);
            await tx.insert(portForwards).values(part);
            const changes = part.map((f) => ({ action: 'portForward.create', objectType: 'PortForward', objectId: f.id, ownerId: f.ownerId, after: f }));
            for (const entry of await this.audit.stage(tx, actor, importId, changes)) entries.push(entry);
          }
        });
        i += slice.length;
        const took = Math.max(performance.now() - started, 0.1);
        if (oneConnection) batch = Math.max(STAGE_MIN_BATCH, Math.min(STAGE_MAX_BATCH, Math.round((slice.length * STAGE_TX_TARGET_MS) / took)));
        await yieldToOthers();
      }
      await this.audit.transact(actor, async (tx, record) => {
        const [staged] = await tx.select({ state: portForwardImports.state }).from(portForwardImports).where(eq(portForwardImports.id, importId)).for('update');
        if (staged?.state !== 'staged') throw cancelled();
        const host = await bumpHostRevision(tx, record, hostId);
        // the rows carry the revision the import was opened at; when other changes of the host came in
        // between, they take this one, so desired-state streams find them among the changes since
        // the revision they sent last (they read no forward count to catch rows they missed)
        const stamped = forwards[0]?.changedRevision;
        if (stamped !== undefined && stamped !== host.desiredRevision)
          await tx.update(portForwards).set({ changedRevision: host.desiredRevision }).where(eq(portForwards.importId, importId));
        await tx.update(portForwardImports).set({ state: 'committed', touchedAt: new Date() }).where(eq(portForwardImports.id, importId));
      });
    } catch (err) {
      await this.removeImport(importId);
      const pg = postgresErrorOf(err);
      if (pg?.code === '23P01') {
        throw new ConflictError(
          'input.csv',
          `${forwards.length} new forwards`,
          'collided with a forward created on the host while the import was written; nothing was imported, run it again',
        );
      }
      if (pg?.code === '23503') throw cancelled();
      throw err;
    }
    // on PostgreSQL each entry goes out as a NOTIFY: 50,000 at once held the event loop for ~1.7 s,
    // 250 a turn for 10–20 ms (each is serialized): a slice of time a turn instead (committed: no budget)
    const slice = new WorkBudget('input.csv', Number.POSITIVE_INFINITY);
    for (const entry of entries) {
      this.audit.publish([entry]);
      await slice.tick();
    }
  }

  /** Removes a staged import with its rows and audit entries, a few thousand per transaction; leaves a committed one alone. */
  private async removeImport(importId: string): Promise<void> {
    const [marked] = await this.db
      .update(portForwardImports)
      .set({ state: 'removing', touchedAt: new Date() })
      .where(and(eq(portForwardImports.id, importId), ne(portForwardImports.state, 'committed')))
      .returning({ id: portForwardImports.id });
    if (!marked) return;
    // the rows stay hidden throughout: the import row goes last
    const batch = sharesOneConnection(this.db) ? REMOVE_BATCH_ONE_CONNECTION : REMOVE_BATCH;
    for (const table of [portForwards, auditLog]) {
      for (;;) {
        const doomed = this.db.select({ id: table.id }).from(table).where(eq(table.importId, importId)).limit(batch);
        const removed = await this.db.delete(table).where(inArray(table.id, doomed)).returning({ id: table.id });
        if (removed.length === 0) break;
        await yieldToOthers();
      }
    }
    await this.db.delete(portForwardImports).where(eq(portForwardImports.id, importId));
  }

  /**
   * Removes staged imports a stopped controller left behind: on PGlite (one process) every one, on
   * PostgreSQL (replicas may be importing) those no staging transaction touched for two minutes.
   * Returns how many forwards' imports were removed.
   */
  async removeLeftovers(storeKind: 'pglite' | 'postgres'): Promise<number> {
    const leftovers = await this.db
      .select({ id: portForwardImports.id, forwards: portForwardImports.forwards })
      .from(portForwardImports)
      .where(
        and(
          ne(portForwardImports.state, 'committed'),
          storeKind === 'pglite' ? undefined : sql`${portForwardImports.touchedAt} < now() - make_interval(secs => ${STALE_IMPORT_MS / 1000})`,
        ),
      );
    for (const leftover of leftovers) await this.removeImport(leftover.id);
    return leftovers.length;
  }

  /** The per-row plan against the host as `db` sees it, and the host revision it was made at. */
  private async plan(db: Executor, actor: Actor, hostId: string, file: ParsedFile): Promise<{ rows: ImportRow[]; revision: number }> {
    const [host] = await db.select().from(hosts).where(eq(hosts.id, hostId));
    if (!host) throw new NotFoundError('input.hostId', hostId, 'host');
    const targets = await this.targetsOn(db, actor, hostId);
    const index = new PortIndex(host);
    // rows of imports still being written hold their ports too
    const held = await db.select({ forward: portForwards, visible: forwardIsVisible }).from(portForwards).where(eq(portForwards.hostId, hostId));
    for (const { forward, visible } of held) index.add({ forward, staged: !visible });
    const names = new Map(
      (await db.select({ id: instances.id, name: instances.name }).from(instances).where(eq(instances.hostId, hostId))).map((i) => [i.id, i.name]),
    );
    const listening = await hostListeningSockets(db, hostId);
    const rows: ImportRow[] = [];
    const budget = new WorkBudget('input.csv', PLAN_BUDGET_MS);
    const c = file.columns;
    const context: PlanContext = {
      actor,
      columns: c,
      at: {
        protocol: c.get('protocol'),
        hostPort: c.get('host_port'),
        vmIp: c.get('vm_ip'),
        vmPort: c.get('vm_port'),
        note: c.get('note'),
        hostAddress: c.get('host_address'),
        sourceCidrs: c.get('source_cidrs'),
        rateLimit: c.get('rate_limit'),
        targets: c.get('targets'),
      },
      host,
      targets,
      targetsByCell: new Map(),
      index,
      names,
      listening,
      // one creation time for the file's forwards (and one object, not one per row)
      createdAt: new Date(),
    };
    let records = 0;
    // rows come in file order, syntax errors among them
    for (const rec of dataRecords(file)) {
      if ('problem' in rec) rows.push(invalidRow(rec.line, null, rec.problem));
      else if (++records > MAX_CSV_ROWS) throw new ValidationError('input.csv', `row ${rec.line}`, `has more than ${MAX_CSV_ROWS} rows; split the file`);
      else rows.push(this.planRow(context, rec));
      await budget.tick();
    }
    return { rows, revision: host.desiredRevision };
  }

  /** Dry runs: turns the creates an owner's forward quotas would refuse into conflicts, in file order. */
  private async markOverQuota(db: Executor, rows: ImportRow[]): Promise<void> {
    const byOwner = new Map<string, ImportRow[]>();
    for (const r of rows) {
      if (r.action !== 'create') continue;
      const list = byOwner.get(r.forward!.ownerId);
      if (list) list.push(r);
      else byOwner.set(r.forward!.ownerId, [r]);
    }
    for (const [ownerId, creates] of byOwner) {
      const [owner] = await db.select().from(users).where(eq(users.id, ownerId));
      if (!owner || (owner.quotaPortForwards === null && owner.quotaForwardedPorts === null)) continue;
      const used = await this.forwards.use(db, ownerId);
      const adding = { forwards: 0, ports: 0 };
      const first = creates.findIndex((r) => {
        adding.forwards++;
        adding.ports += forwardPorts(r.forward!);
        return forwardQuotaProblem(owner, used, adding) !== undefined;
      });
      if (first < 0) continue;
      const problem = forwardQuotaProblem(owner, used, adding)!;
      // this create and every later one of the owner are over
      for (const late of creates.slice(first)) {
        Object.assign(late, {
          action: 'conflict',
          column: null,
          forward: null,
          reason: `would exceed ${problem.quota} (${problem.used} of ${problem.limit} used before this file)`,
        } satisfies Partial<ImportRow>);
      }
    }
  }

  /**
   * The visible forwards of a host, or of one instance on it, as CSV in the import format (ranges as "a-b";
   * formula-like notes escaped). An instance the actor cannot see yields the header row alone.
   */
  async export(actor: Actor, hostId: string, instanceId?: string | null): Promise<string> {
    const id = validId('hostId', hostId);
    const instance = instanceId === null || instanceId === undefined ? null : validId('instanceId', instanceId);
    const rows = await this.db
      .select()
      .from(portForwards)
      .where(
        and(
          eq(portForwards.hostId, id),
          instance === null ? undefined : eq(portForwards.instanceId, instance),
          forwardIsVisible,
          isAdmin(actor) ? undefined : eq(portForwards.ownerId, actor.userId),
        ),
      )
      .orderBy(asc(portForwards.hostPortStart), asc(portForwards.protoLo));
    const lines = [[...REQUIRED_COLUMNS, ...OPTIONAL_COLUMNS].join(',')];
    for (const f of rows) {
      const target = { start: f.targetPortStart, end: f.targetPortStart + (f.hostPortEnd - f.hostPortStart) };
      lines.push(
        [
          f.protocol,
          portRangeText({ start: f.hostPortStart, end: f.hostPortEnd }),
          f.targetAddress,
          portRangeText(target),
          f.note,
          f.hostAddress ?? '',
          f.sourceCidrs.join(' '),
          rateLimitCell(f.rateLimit),
          targetsCell(f.balance),
        ]
          .map(csvCell)
          .join(','),
      );
    }
    return `${lines.join('\r\n')}\r\n`;
  }

  private columnsOf(header: CsvRecord): Map<string, number> {
    const columns = new Map<string, number>();
    header.fields.forEach((raw, i) => {
      const name = raw.trim().toLowerCase();
      if (![...REQUIRED_COLUMNS, ...OPTIONAL_COLUMNS].includes(name as never)) {
        throw new ValidationError(
          'input.csv',
          `row 1 column ${i + 1}`,
          `has the unknown column "${raw}" (known: ${[...REQUIRED_COLUMNS, ...OPTIONAL_COLUMNS].join(', ')})`,
        );
      }
      if (columns.has(name)) throw new ValidationError('input.csv', `row 1 column ${i + 1}`, `names the column "${name}" twice`);
      columns.set(name, i);
    });
    const missing = REQUIRED_COLUMNS.filter((c) => !columns.has(c));
    if (missing.length > 0) throw new ValidationError('input.csv', 'row 1', `lacks the column(s) ${missing.join(', ')}`);
    return columns;
  }

  /** Addresses on the host the actor may forward to, by canonical address; `controller` marks the controller's own (refused). */
  private async targetsOn(tx: Executor, actor: Actor, hostId: string): Promise<Map<string, (ForwardTarget & { controller: boolean })[]>> {
    const rows = await tx
      .select({
        id: ipAllocations.id,
        address: ipAllocations.address,
        prefixLength: ipAllocations.prefixLength,
        instanceId: instances.id,
        instanceName: instances.name,
        ownerId: instances.ownerId,
      })
      .from(ipAllocations)
      .innerJoin(nics, eq(nics.id, ipAllocations.nicId))
      .innerJoin(instances, eq(instances.id, nics.instanceId))
      .where(
        and(eq(instances.hostId, hostId), inArray(ipAllocations.prefixLength, [32, 128]), isAdmin(actor) ? undefined : eq(instances.ownerId, actor.userId)),
      );
    const map = new Map<string, (ForwardTarget & { controller: boolean })[]>();
    const isOwn = controllerAddressCheck();
    for (const r of rows) {
      const target = {
        id: r.id,
        address: r.address,
        family: r.prefixLength === 32 ? 4 : 6,
        instanceId: r.instanceId,
        instanceName: r.instanceName,
        ownerId: r.ownerId,
        // read once per plan: looking up the machine's interfaces costs ~80 µs
        controller: isOwn(r.address),
      } satisfies ForwardTarget & { controller: boolean };
      map.set(r.address, [...(map.get(r.address) ?? []), target]);
    }
    return map;
  }

  /** The vm_ip cell's candidate targets, or why it names none; looked up once per distinct cell of the file. */
  private targetsOfCell(context: PlanContext, text: string): readonly (ForwardTarget & { controller: boolean })[] | { error: string } {
    let found = context.targetsByCell.get(text);
    if (found === undefined) {
      const vmIp = parseIp(text);
      found = 'error' in vmIp ? { error: `"${text}" ${vmIp.error}` } : (context.targets.get(formatIp(vmIp)) ?? []);
      context.targetsByCell.set(text, found);
    }
    return found;
  }

  private planRow(context: PlanContext, rec: CsvRecord): ImportRow {
    const { actor, columns, at, host, index, names, listening, createdAt } = context;
    const row = rec.line;
    const fields = rec.fields;
    if (fields.length !== columns.size) return invalidRow(row, null, `has ${fields.length} columns, the header has ${columns.size}`);
    const protocolCell = cellAt(fields, at.protocol);
    const protocol = PROTOCOLS[protocolCell.toLowerCase()];
    if (!protocol) return invalidRow(row, 'protocol', `"${protocolCell}" is not tcp, udp or both`);
    const vmIpCell = cellAt(fields, at.vmIp);
    const candidates = this.targetsOfCell(context, vmIpCell);
    if ('error' in candidates) return invalidRow(row, 'vm_ip', candidates.error);
    if (candidates.length === 0) return invalidRow(row, 'vm_ip', `${vmIpCell} is not an address of an instance you own on host "${host.name}"`);
    if (candidates.length > 1)
      return invalidRow(
        row,
        'vm_ip',
        `${vmIpCell} is held by several instances on host "${host.name}" (on different networks); forward through the API with an instanceId`,
      );
    const target = candidates[0]!;
    if (target.controller) return invalidRow(row, 'vm_ip', `${vmIpCell} is an address of the controller itself; traffic may only be sent to instances`);
    const sources = cellAt(fields, at.sourceCidrs);
    const rateLimit = parseRateLimitCell(cellAt(fields, at.rateLimit));
    if (rateLimit && 'error' in rateLimit) return invalidRow(row, 'rate_limit', rateLimit.error);
    const listed = parseTargetsCell(cellAt(fields, at.targets));
    if (listed && 'error' in listed) return invalidRow(row, 'targets', listed.error);
    let balance: ForwardBalanceJson | null = null;
    if (listed) {
      const resolved: ResolvedTarget[] = [];
      for (const entry of listed.entries) {
        const address = parseIp(entry.address);
        if ('error' in address) return invalidRow(row, 'targets', `"${entry.address}" ${address.error}`);
        const held = context.targets.get(formatIp(address)) ?? [];
        if (held.length !== 1 || held[0]!.controller) {
          return invalidRow(row, 'targets', `${entry.address} is not the address of one instance you own on host "${host.name}"`);
        }
        resolved.push({ target: held[0]!, weight: entry.weight ?? 1 });
      }
      try {
        resolved.forEach((r, i) => validWeight(`targets[${i}].weight`, r.weight));
        balance = checkedBalance(target, resolved, listed.sourceAffinity, 'targets');
      } catch (err) {
        if (err instanceof GatehouseError) return invalidRow(row, 'targets', err.message);
        throw err;
      }
    }
    let placed: PlacedForward;
    const hostPortCell = cellAt(fields, at.hostPort);
    const hostAddressCell = cellAt(fields, at.hostAddress);
    try {
      placed = placeForward(
        {
          protocol,
          hostPort: hostPortCell === '' ? null : hostPortCell,
          targetPort: cellAt(fields, at.vmPort),
          hostAddress: hostAddressCell === '' ? null : hostAddressCell,
          sourceCidrs: sources === '' ? [] : sources.split(/[\s;]+/).filter(Boolean),
          rateLimit,
          balance,
          note: at.note === undefined ? null : csvCellValue(fields[at.note]!),
        },
        host,
        target,
        columnOf,
        !isAdmin(actor),
      );
    } catch (err) {
      if (err instanceof GatehouseError)
        return invalidRow(row, err.field?.replace(/\[\d+\]$/, '').replace(/^rate_limit\..*$/, 'rate_limit') ?? null, err.message);
      throw err;
    }
    let ports = placed.hostPorts;
    if (!ports) {
      ports = index.lowestFree(placed, placed.targetPorts.end - placed.targetPorts.start + 1) ?? null;
      if (!ports) return { row, action: 'conflict', reason: `no free host port left on host "${host.name}"`, column: 'host_port', forward: null };
    }
    const clash = index.overlapping(placed, ports);
    const same = clash.length === 0 ? undefined : sameForward(clash, placed, ports, target);
    if (same && clash.length === 1) return { row, action: 'unchanged', reason: null, column: null, forward: same.forward };
    if (clash.length > 0) {
      const { forward: f, row: other, staged } = clash[0]!;
      const where = `${portRangeText(ports)}/${placed.protocol} on host "${host.name}"`;
      const reason =
        other !== undefined
          ? `${where} is already forwarded by row ${other} of this file`
          : staged
            ? `${where} is held by another import that is being written`
            : `${where} is already forwarded to ${isAdmin(actor) || f.ownerId === actor.userId ? `${names.get(f.instanceId) ?? f.instanceId} (${f.targetAddress}:${f.targetPortStart})` : 'another tenant'}`;
      return { row, action: 'conflict', reason, column: 'host_port', forward: null };
    }
    // the port audit: a service on the host listens there (an unchanged row above stays unchanged, with its warning)
    const service = listeningClash(listening, host.publicAddresses, { protocol: placed.protocol, hostAddress: placed.hostAddress, ports });
    if (service) {
      const where = `${portRangeText(ports)}/${placed.protocol} on host "${host.name}"`;
      return { row, action: 'conflict', reason: `${where} is in use on the host: ${listeningText(service)}`, column: 'host_port', forward: null };
    }
    // the revision the import commits as; set exactly from the bump when it is applied
    const forward = forwardRow(placed, ports, host.id, target, host.desiredRevision + 1, createdAt);
    const planned = { row, action: 'create' as const, reason: null, column: null, forward };
    index.add(planned);
    return planned;
  }
}
