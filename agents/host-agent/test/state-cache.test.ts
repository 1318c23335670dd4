/**
 * The last-known-good state cache, without root: what lands on disk (mode, content), that a write
 * is atomic (a reader never sees half a file, an interrupted write leaves the old one), that a
 * corrupt, foreign or unknown-format file is refused whole, and that an agent restarted with the
 * controller down applies the cached state at once, says it started from the cache, and then
 * converges to the controller's state.
 */
import { diffDesiredState } from '@gatehouse/agent-protocol';
import type { DesiredState } from '@gatehouse/sdk';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, readdirSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { HostAgent, STATE_CACHE_FILE, StateCache, StateCacheRefusedError } from '../src/index.js';
import { documentPieces } from '../src/state-cache.js';
import { FakeController } from './fake-controller.js';
import { ScriptedDriver } from './scripted-driver.js';

const HOST_ID = '7c1f1b43-66a5-4c57-a4d5-6f1f0c4b1a22';
const OTHER_HOST = '7c1f1b43-66a5-4c57-a4d5-6f1f0c4b1a23';

const state = (revision: number, forwards = 1, hostId = HOST_ID): DesiredState => ({
  apiVersion: 1,
  hostId,
  hostName: 'cached',
  revision,
  publicAddresses: ['198.51.100.1'],
  instances: [
    {
      id: '00000000-0000-4000-8000-0000000000c1',
      name: 'vm1',
      externalId: 'vm1',
      nics: [],
      firewall: { inboundPolicy: 'allow', outboundPolicy: 'allow', rules: [] },
      bandwidth: [],
      portForwards: Array.from({ length: forwards }, (_, n) => ({
        id: `10000000-0000-4000-8000-${String(n).padStart(12, '0')}`,
        protocol: 'tcp' as const,
        hostAddress: null,
        hostPorts: { start: 20000 + n, end: 20000 + n },
        targetAddress: '10.0.0.2',
        targetPorts: { start: 80 + revision, end: 80 + revision },
        sourceCidrs: [],
      })),
    },
  ],
});

const dirs: string[] = [];
const stateDir = () => {
  const dir = join(mkdtempSync(join(tmpdir(), 'gatehouse-state-')), 'agent');
  dirs.push(dir);
  return dir;
};

afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(join(d, '..'), { recursive: true, force: true });
});

async function refusal(cache: StateCache, hostId?: string): Promise<string> {
  const error = await cache.load(hostId).then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(error).toBeInstanceOf(StateCacheRefusedError);
  return (error as Error).message;
}

describe('state cache', () => {
  it('stores the document with its host, revision and checksum, readable by its owner only, and reads it back', async () => {
    const dir = stateDir();
    const cache = new StateCache(dir);
    expect(await cache.load(HOST_ID)).toBeNull();
    expect(await cache.save(state(7))).toBe(true);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(cache.path).mode & 0o777).toBe(0o600);
    const file = JSON.parse(readFileSync(cache.path, 'utf8'));
    expect(file).toMatchObject({ format: 1, hostId: HOST_ID, revision: 7, checksum: expect.stringMatching(/^sha256:[0-9a-f]{64}$/) });
    expect(readdirSync(dir)).toEqual([STATE_CACHE_FILE]);
    const loaded = await new StateCache(dir).load(HOST_ID);
    expect(loaded).toMatchObject({ hostId: HOST_ID, revision: 7, desired: state(7) });
    // the same document is not written again; a new one is
    expect(await cache.save(state(7))).toBe(false);
    expect(await cache.save(state(8))).toBe(true);
    expect((await new StateCache(dir).load())?.revision).toBe(8);
  });

  it('serialises a document in pieces that join to exactly its JSON, at most 2,000 forwards to a piece', () => {
    const empty: DesiredState = { ...state(1), instances: [] };
    const noForwards = state(2, 0);
    const big = state(3, 4001);
    // optional members left undefined are left out, as JSON.stringify does
    const optional = state(4, 3);
    Object.assign(optional.instances[0]!.portForwards[1]!, { rateLimit: undefined, balance: null });
    Object.assign(optional.instances[0]!, { extra: undefined });
    const two: DesiredState = { ...big, instances: [big.instances[0]!, { ...noForwards.instances[0]!, id: '00000000-0000-4000-8000-0000000000c2' }] };
    for (const doc of [empty, noForwards, big, optional, two]) expect([...documentPieces(doc)].join('')).toBe(JSON.stringify(doc));
    const pieces = [...documentPieces(big)];
    expect(Math.max(...pieces.map((p) => (p.match(/"hostPorts"/g) ?? []).length))).toBe(2000);
  });

  it('lets other work run while it serialises a large document, and stores it whole', async () => {
    const dir = stateDir();
    let pauses = 0;
    const cache = new StateCache(dir, { pause: async () => pauses++ });
    const big = state(9, 20_000); // about 4 MB
    expect(await cache.save(big)).toBe(true);
    expect(pauses).toBeGreaterThan(5);
    expect((await new StateCache(dir).load(HOST_ID))?.desired).toEqual(big);
    expect(await cache.save(state(9, 20_000))).toBe(false);
  });

  it('is written atomically: a reader never sees a partial file, and an interrupted write leaves the previous state', async () => {
    const dir = stateDir();
    const cache = new StateCache(dir);
    await cache.save(state(1, 5000)); // about 1 MB
    let reads = 0;
    let writing = true;
    const reader = (async () => {
      const other = new StateCache(dir);
      while (writing) {
        const loaded = await other.load(HOST_ID); // throws on a torn or mixed file
        expect(loaded?.desired.instances[0]!.portForwards).toHaveLength(5000);
        reads++;
      }
    })();
    for (let revision = 2; revision <= 30; revision++) await cache.save(state(revision, 5000));
    writing = false;
    await reader;
    expect(reads).toBeGreaterThan(0);

    // a write cut short by a crash: only its temporary file exists, half written; the next start ignores and removes it
    const torn = readFileSync(cache.path, 'utf8').replace('"revision":30', '"revision":31');
    writeFileSync(join(dir, `.${STATE_CACHE_FILE}.999999.deadbeef.tmp`), torn.slice(0, torn.length / 2), { mode: 0o600 });
    expect((await new StateCache(dir).load(HOST_ID))?.revision).toBe(30);
    expect(readdirSync(dir)).toEqual([STATE_CACHE_FILE]);
  });

  it('refuses a corrupt file whole: torn, a changed byte, no checksum, or a document that does not validate', async () => {
    const dir = stateDir();
    const cache = new StateCache(dir);
    await cache.save(state(3));
    const good = readFileSync(cache.path, 'utf8');

    writeFileSync(cache.path, good.slice(0, good.length - 40));
    expect(await refusal(cache, HOST_ID)).toMatch(/desired-state\.json: is not JSON .*corrupt.*nothing of it is applied/);

    writeFileSync(cache.path, good.replace('"targetAddress":"10.0.0.2"', '"targetAddress":"10.0.0.9"'));
    expect(await refusal(cache, HOST_ID)).toMatch(/has checksum sha256:[0-9a-f]+, its header says sha256:[0-9a-f]+: the file is corrupt/);

    const file = JSON.parse(good);
    writeFileSync(cache.path, JSON.stringify({ ...file, checksum: undefined }));
    expect(await refusal(cache, HOST_ID)).toMatch(/no checksum/);

    // a well-formed file with a document no controller would send (a port out of range)
    const bad = state(3);
    bad.instances[0]!.portForwards[0]!.hostPorts = { start: 70000, end: 70000 };
    const forged = new StateCache(stateDir());
    await forged.save(bad);
    expect(await refusal(forged, HOST_ID)).toMatch(/invalid document: .*cache\.desired\.instances\[0\]\.portForwards\[0\]\.hostPorts.*70000/);
  });

  it('refuses a foreign file (another host) and an unknown format', async () => {
    const cache = new StateCache(stateDir());
    await cache.save(state(3, 1, OTHER_HOST));
    expect(await refusal(cache, HOST_ID)).toMatch(new RegExp(`is for host ${OTHER_HOST}, this agent manages host ${HOST_ID}`));
    // without an expected host the file's own host is taken
    expect((await cache.load())?.hostId).toBe(OTHER_HOST);

    const file = JSON.parse(readFileSync(cache.path, 'utf8'));
    writeFileSync(cache.path, JSON.stringify({ ...file, format: 2 }));
    expect(await refusal(cache)).toMatch(/has format 2, this agent reads format 1 only/);

    // a header that does not belong to its document
    writeFileSync(cache.path, JSON.stringify({ ...file, hostId: HOST_ID }));
    expect(await refusal(cache)).toMatch(/header \(host 7c1f1b43-66a5-4c57-a4d5-6f1f0c4b1a22, revision 3\) does not match its document/);
  });
});

describe('an agent with a state directory', () => {
  const logs: string[] = [];
  const logger = {
    info: (m: string, f?: object) => logs.push(`info ${m} ${JSON.stringify(f ?? {})}`),
    warn: (m: string, f?: object) => logs.push(`warn ${m} ${JSON.stringify(f ?? {})}`),
    error: (m: string, f?: object) => logs.push(`error ${m} ${JSON.stringify(f ?? {})}`),
  };
  const agents: HostAgent[] = [];
  const controllers: FakeController[] = [];
  const agent = (url: string, dir: string, driver: ScriptedDriver, hostId = HOST_ID) => {
    const a = new HostAgent({
      controllerUrl: url,
      token: 'unused',
      hostId,
      driver,
      logger,
      stateDir: dir,
      driftIntervalMs: 200,
      backoff: { minMs: 50, maxMs: 200 },
    });
    agents.push(a);
    return a;
  };
  const until = async (check: () => boolean, ms = 10_000) => {
    for (const end = Date.now() + ms; !check() && Date.now() < end;) await new Promise((r) => setTimeout(r, 20));
    return check();
  };
  /** A loopback port nothing listens on (a controller that is down). */
  const downPort = async () => {
    const server = createServer().listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as AddressInfo;
    server.close();
    await once(server, 'close');
    return port;
  };

  afterEach(async () => {
    for (const a of agents.splice(0)) await a.stop();
    for (const c of controllers.splice(0)) await c.close();
    logs.length = 0;
  });

  it('stores what it applied; restarted with the controller down, applies it at once, then converges to the controller and reports CACHE', async () => {
    const dir = stateDir();
    const first = await FakeController.start();
    controllers.push(first);
    const before = new ScriptedDriver();
    const a1 = agent(first.url, dir, before);
    await a1.start();
    first.push(3, state(3));
    await first.waitForReport((r) => r.mutation === 'reportHostStatus' && r.input.appliedRevision === 3);
    expect(first.reports.find((r) => r.mutation === 'reportHostStatus')?.input).toMatchObject({ startedFrom: 'CONTROLLER', cachedRevision: null });
    await a1.stop();
    expect((await new StateCache(dir).load(HOST_ID))?.revision).toBe(3);

    // the host "reboots" with the controller down: nothing listens on its port
    const port = await downPort();
    const driver = new ScriptedDriver();
    const a2 = agent(`ws://127.0.0.1:${port}/graphql`, dir, driver);
    const started = performance.now();
    await a2.start();
    expect(driver.callsOf('apply').map((c) => c.desired.revision)).toEqual([3]);
    console.log(`[state-cache] cached revision applied ${Math.round(performance.now() - started)} ms after start, controller down`);
    expect(driver.callsOf('apply')[0]!.desired).toEqual(state(3));
    expect(a2.state).toMatchObject({ connected: false, appliedRevision: 3, startedFrom: 'CACHE', cachedRevision: 3 });
    expect(logs.join('\n')).toMatch(/applying the cached desired state revision 3 before connecting/);
    // while the controller stays away nothing is removed: no empty apply, no release, no gc of anything
    await new Promise((r) => setTimeout(r, 600));
    expect(driver.callsOf('release')).toEqual([]);
    expect(driver.callsOf('apply').every((c) => c.desired.instances.length === 1)).toBe(true);
    expect(driver.callsOf('gc').every((c) => c.validInstanceIds.length === 1)).toBe(true);

    // the controller comes back with a newer revision: applied, stored, reported with how the agent started
    const back = await FakeController.start(port);
    controllers.push(back);
    back.push(4, state(4));
    const report = await back.waitForReport((r) => r.mutation === 'reportHostStatus' && r.input.appliedRevision === 4);
    expect(report.input).toMatchObject({ startedFrom: 'CACHE', cachedRevision: 3 });
    expect(driver.callsOf('apply').at(-1)!.desired.revision).toBe(4);
    expect(await until(() => readFileSync(join(dir, STATE_CACHE_FILE), 'utf8').includes('"revision":4'))).toBe(true);
  });

  it('stores a full document before reporting it applied, a patched one once the changes pause, and on stop what it has not stored yet', async () => {
    const dir = stateDir();
    const c = await FakeController.start();
    controllers.push(c);
    const a = agent(c.url, dir, new ScriptedDriver());
    await a.start();
    const applied = (revision: number) => c.waitForReport((r) => r.mutation === 'reportHostStatus' && r.input.appliedRevision === revision);
    c.push(3, state(3));
    await applied(3);
    expect((await new StateCache(dir).load(HOST_ID))?.revision).toBe(3);
    for (const revision of [4, 5]) {
      c.pushPatch(revision, diffDesiredState(state(revision - 1), state(revision)));
      await applied(revision);
    }
    expect(await until(() => readFileSync(join(dir, STATE_CACHE_FILE), 'utf8').includes('"revision":5'))).toBe(true);
    expect((await new StateCache(dir).load(HOST_ID))?.desired).toEqual(state(5));
    c.pushPatch(6, diffDesiredState(state(5), state(6)));
    await applied(6);
    await a.stop();
    expect((await new StateCache(dir).load(HOST_ID))?.desired).toEqual(state(6));
  });

  it('subscribes again when the controller ends its subscription with an error, keeping what it applied meanwhile', async () => {
    const controller = await FakeController.start();
    controllers.push(controller);
    const driver = new ScriptedDriver();
    const a = agent(controller.url, stateDir(), driver);
    await a.start();
    controller.push(7, state(7));
    await controller.waitForReport((r) => r.mutation === 'reportHostStatus' && r.input.appliedRevision === 7);
    const opened = controller.subscriptionsOpened;
    controller.failSubscriptions('The database is unavailable (ECONNREFUSED); try again');
    expect(await until(() => controller.subscriptionsOpened > opened, 5000)).toBe(true);
    expect(logs.join('\n')).toMatch(/desired-state subscription failed; subscribing again .*database is unavailable/);
    controller.push(8, state(8));
    await controller.waitForReport((r) => r.mutation === 'reportHostStatus' && r.input.appliedRevision === 8);
    expect(driver.callsOf('apply').map((c) => c.desired.revision)).toEqual([7, 7, 8]);
    expect(driver.callsOf('release')).toEqual([]);
  });

  it('refuses a corrupt or foreign cache with a log line, applies nothing of it, and waits for the controller', async () => {
    const port = await downPort();
    const url = `ws://127.0.0.1:${port}/graphql`;
    const corrupt = stateDir();
    await new StateCache(corrupt).save(state(5));
    writeFileSync(
      join(corrupt, STATE_CACHE_FILE),
      readFileSync(join(corrupt, STATE_CACHE_FILE), 'utf8').replace('"hostPorts":{"start":20000', '"hostPorts":{"start":20001'),
    );
    const driver = new ScriptedDriver();
    const a = agent(url, corrupt, driver);
    await a.start();
    expect(logs.join('\n')).toMatch(
      /error refused the cached desired state .*desired-state\.json: has checksum .*corrupt; nothing of it is applied, waiting for the controller/,
    );
    expect(a.state).toMatchObject({ startedFrom: 'CONTROLLER', cachedRevision: null, appliedRevision: null });

    const foreign = stateDir();
    await new StateCache(foreign).save(state(5, 1, OTHER_HOST));
    const b = agent(url, foreign, driver);
    await b.start();
    expect(logs.join('\n')).toMatch(new RegExp(`refused the cached desired state .*: is for host ${OTHER_HOST}, this agent manages host ${HOST_ID}`));
    await new Promise((r) => setTimeout(r, 300));
    expect(driver.callsOf('apply')).toEqual([]);

    // the controller answers: its document is applied and replaces the refused file
    const controller = await FakeController.start(port);
    controllers.push(controller);
    controller.push(6, state(6));
    await controller.waitForReport((r) => r.mutation === 'reportHostStatus' && r.input.appliedRevision === 6);
    // both agents stored it, replacing the corrupt file and the foreign one
    const stored = (dir: string) =>
      new StateCache(dir).load(HOST_ID).then(
        (c) => c?.revision,
        () => undefined,
      );
    let revisions: (number | undefined)[] = [];
    for (const end = Date.now() + 5000; Date.now() < end; await new Promise((r) => setTimeout(r, 50))) {
      revisions = [await stored(corrupt), await stored(foreign)];
      if (revisions.every((r) => r === 6)) break;
    }
    expect(revisions).toEqual([6, 6]);
  });
});
