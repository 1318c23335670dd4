/**
 * PostgreSQL restarts, against a server of the test's own (initdb/pg_ctl, its own port: never the
 * machine's shared one): a controller serves a stream of mutations and a live desired-state
 * subscription while the server is stopped for a while and started again. Mutations during the
 * outage fail at once with `extensions.code: UNAVAILABLE` (none hangs); those before and after
 * succeed; the subscription lives on and delivers the revision that committed last, with every
 * forward created, also those that committed before the controller listened again (replayed from
 * the host's revision, not from NOTIFY). The outage and recovery times are printed. Audit entries
 * and object statuses committed while the LISTEN connection was gone reach live subscriptions too
 * (replayed from the audit log; each audit entry once), and the proxy units are told to resync.
 */
import { createClient, type Client as WsClient } from 'graphql-ws';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { REPORT_OBJECT_STATUS_MUTATION } from '@gatehouse/agent-protocol';
import { EVENTS_APPLICATION_NAME, type PostgresEventTarget } from '../src/db/postgres-events.js';
import { startController, type Controller } from '../src/server.js';
import { ERROR_FIELDS, createTestApi, type TestApi } from '../src/testing/api.js';
import { createHost, createPool } from '../src/testing/fixtures.js';
import { privatePostgresAvailable, startPostgresServer, type PostgresServer } from '../src/testing/postgres-server.js';
import { REQUIRE_SYSTEM } from '../src/testing/stores.js';

const available = privatePostgresAvailable();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Outcome {
  port: number;
  at: number;
  ms: number;
  ok: boolean;
  code?: string;
  message?: string;
}

describe.skipIf(!available && !REQUIRE_SYSTEM)('controller through a PostgreSQL restart', () => {
  let pg: PostgresServer;
  let controller: Controller;
  let api: TestApi;
  let ws: WsClient | undefined;
  const logs: string[] = [];
  const logger = {
    info: (m: string) => logs.push(m),
    warn: (m: string) => logs.push(m),
    error: (m: string, ...rest: unknown[]) => logs.push(`${m} ${rest.join(' ')}`),
  };

  /** A host with one instance on br-pg; returns both ids. */
  const hostWithInstance = async (name: string) => {
    const hostId = await createHost(api.admin, `${name}-host`);
    const vm = (
      await api.admin(
        `mutation($h: ID!, $n: String!) { createInstance(input: { hostId: $h, name: $n, nics: [{ network: "br-pg" }] }) { ... on CreateInstancePayload { instance { id } } ${ERROR_FIELDS} } }`,
        { h: hostId, n: `${name}-vm` },
      )
    ).data!.createInstance.instance.id as string;
    return { hostId, vm };
  };
  /** An admin graphql-ws client over a real socket. */
  const socket = () =>
    createClient({
      url: controller.url.replace('http://', 'ws://'),
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      lazy: false,
      onNonLazyError: () => {},
      connectionParams: { Authorization: `Bearer ${api.adminSecret}` },
    });

  beforeAll(async () => {
    pg = await startPostgresServer();
    controller = await startController({ store: { kind: 'postgres', url: pg.url, connectTimeoutS: 2 }, port: 0, bootstrap: false, logger });
    api = await createTestApi(controller.store, controller.container);
  }, 120_000);

  afterAll(async () => {
    await ws?.dispose();
    await controller?.close();
    await pg?.destroy();
  }, 60_000);

  it('fails mutations fast with UNAVAILABLE during the outage, and the live subscription gets every revision committed after it', async () => {
    await createPool(api.admin, { name: 'pg', kind: 'PRIVATE', network: 'br-pg', cidr: '10.61.0.0/24' });
    const { hostId, vm } = await hostWithInstance('pg');
    // the live subscription, over a real socket
    ws = socket();
    const received: { revision: number; ports: number[] }[] = [];
    const errors: unknown[] = [];
    let completed = false;
    ws.subscribe<{ hostDesiredState: { revision: number; document: { instances: { portForwards: { hostPorts: { start: number } }[] }[] } } }>(
      { query: 'subscription($h: ID!) { hostDesiredState(hostId: $h) { revision document } }', variables: { h: hostId } },
      {
        next: (m) => {
          if (!m.data) return void errors.push(m.errors);
          const d = m.data.hostDesiredState;
          received.push({ revision: d.revision, ports: d.document.instances.flatMap((i) => i.portForwards.map((f) => f.hostPorts.start)) });
        },
        error: (e) => errors.push(e),
        complete: () => (completed = true),
      },
    );
    for (let end = Date.now() + 10_000; received.length === 0 && Date.now() < end;) await sleep(50);
    expect(received.length).toBe(1);

    // a stream of mutations, one after another, for the whole test
    const outcomes: Outcome[] = [];
    const t0 = performance.now();
    let streaming = true;
    const stream = (async () => {
      for (let port = 20000; streaming; port++) {
        const at = performance.now();
        const r = await api.admin(
          `mutation($i: ID!, $p: String!) { createPortForward(input: { instanceId: $i, protocol: TCP, hostPort: $p, targetPort: "80" }) { __typename ... on CreatePortForwardPayload { portForward { id } } ${ERROR_FIELDS} } }`,
          { i: vm, p: String(port) },
        );
        const ms = performance.now() - at;
        const ok = r.data?.createPortForward?.__typename === 'CreatePortForwardPayload';
        const error = r.errors?.[0];
        outcomes.push({
          port,
          at: at - t0,
          ms,
          ok,
          code: error?.extensions?.code as string | undefined,
          message: error?.message ?? r.data?.createPortForward?.message,
        });
        await sleep(ok ? 100 : 50);
      }
    })();

    await sleep(1000);
    const down = performance.now() - t0;
    await pg.stop();
    const stopped = performance.now() - t0;
    await sleep(2500);
    await pg.start();
    const up = performance.now() - t0;
    // keep mutating past the re-listen (its backoff is at most 5 s)
    for (let end = Date.now() + 15_000; Date.now() < end;) {
      await sleep(200);
      if (
        controller.store.kind === 'postgres' &&
        (controller.store.eventTarget as { relistens?: number }).relistens! > 0 &&
        outcomes.filter((o) => o.ok && o.at > up).length >= 5
      )
        break;
    }
    streaming = false;
    await stream;

    const failed = outcomes.filter((o) => !o.ok);
    const succeeded = outcomes.filter((o) => o.ok);
    // nothing but UNAVAILABLE
    expect(failed.length).toBeGreaterThan(0);
    for (const f of failed) expect(f, JSON.stringify(f)).toMatchObject({ code: 'UNAVAILABLE' });
    // none hangs: a request that started during the outage is answered within a few connect timeouts (2 s each)
    expect(Math.max(...outcomes.map((o) => o.ms))).toBeLessThan(8000);
    expect(failed[0]!.message).toMatch(/The database is unavailable \(\w+\); try again/);
    expect(succeeded.some((o) => o.at < down)).toBe(true);
    const after = succeeded.filter((o) => o.at > up);
    expect(after.length).toBeGreaterThanOrEqual(5);
    // the subscription lived through it and caught up with the newest revision, holding every forward created
    const { desiredRevision } = (await api.admin(`query($h: ID!) { host(id: $h) { desiredRevision } }`, { h: hostId })).data!.host;
    for (let end = Date.now() + 10_000; received.at(-1)!.revision < desiredRevision && Date.now() < end;) await sleep(50);
    expect({ completed, errors }).toEqual({ completed: false, errors: [] });
    expect(received.at(-1)!.revision).toBe(desiredRevision);
    expect(received.at(-1)!.ports.sort()).toEqual(succeeded.map((o) => o.port).sort());
    const events = (controller.store as { eventTarget?: { relistens: number; relistenedAt?: number } }).eventTarget!;
    expect(events.relistens).toBeGreaterThanOrEqual(1);
    const relistened = events.relistenedAt! - t0;
    const deaf = after.filter((o) => o.at + o.ms < relistened);
    console.log(
      `[postgres-restart] server down ${Math.round(up - stopped)} ms (stop took ${Math.round(stopped - down)} ms): ${failed.length} mutations UNAVAILABLE, ` +
        `slowest UNAVAILABLE answer ${Math.round(Math.max(...failed.map((f) => f.ms)))} ms, slowest answer ${Math.round(Math.max(...outcomes.map((o) => o.ms)))} ms; first success ${Math.round(after[0]!.at + after[0]!.ms - up)} ms after the server was up; ` +
        `LISTEN again ${Math.round(relistened - up)} ms after it was up; ${deaf.length} mutations committed before that, delivered by the replay; ` +
        `${succeeded.length} succeeded in all, the subscription at revision ${desiredRevision}`,
    );
  }, 120_000);

  it("delivers a revision committed while the controller's LISTEN connection was gone: replayed from the host's revision, not from NOTIFY", async () => {
    const { hostId, vm } = await hostWithInstance('deaf');
    const sub = socket();
    const revisions: number[] = [];
    sub.subscribe<{ hostDesiredState: { revision: number } }>(
      { query: 'subscription($h: ID!) { hostDesiredState(hostId: $h) { revision } }', variables: { h: hostId } },
      { next: (m) => m.data && revisions.push(m.data.hostDesiredState.revision), error: () => {}, complete: () => {} },
    );
    try {
      for (let end = Date.now() + 10_000; revisions.length === 0 && Date.now() < end;) await sleep(50);
      const events = (controller.store as { eventTarget?: { relistens: number; relistenedAt?: number } }).eventTarget!;
      const admin = postgres(pg.url, { max: 1, onnotice: () => {} });
      let deafCommits = 0;
      try {
        for (let attempt = 0; attempt < 5 && deafCommits === 0; attempt++) {
          const relistens = events.relistens;
          // the LISTEN connection goes (as in a failover or a network cut); commit one change at once
          const killed = await admin`select pg_terminate_backend(pid) as ok from pg_stat_activity where application_name = ${EVENTS_APPLICATION_NAME}`;
          expect(killed.map((k) => k.ok)).toEqual([true]);
          const r = await api.admin(
            `mutation($i: ID!, $p: String!) { createPortForward(input: { instanceId: $i, protocol: TCP, hostPort: $p, targetPort: "80" }) { __typename } }`,
            { i: vm, p: String(21000 + attempt) },
          );
          expect(r.data?.createPortForward.__typename).toBe('CreatePortForwardPayload');
          const committed = performance.now();
          const { desiredRevision } = (await api.admin(`query($h: ID!) { host(id: $h) { desiredRevision } }`, { h: hostId })).data!.host;
          for (let end = Date.now() + 10_000; (events.relistens === relistens || revisions.at(-1)! < desiredRevision) && Date.now() < end;) await sleep(20);
          expect(events.relistens).toBeGreaterThan(relistens);
          // the subscription has the revision, whether its NOTIFY was heard or not
          expect(revisions.at(-1)).toBe(desiredRevision);
          if (events.relistenedAt! > committed) deafCommits++;
        }
      } finally {
        await admin.end();
      }
      console.log(`[postgres-restart] a revision committed while LISTEN was gone reached the subscription through the replay (${deafCommits} such commit)`);
      expect(deafCommits).toBe(1);
    } finally {
      await sub.dispose();
    }
  }, 60_000);

  it('replays the audit entries and object statuses committed while LISTEN was gone to live subscriptions, each entry once, and resyncs the proxies', async () => {
    const { hostId, vm } = await hostWithInstance('replay');
    const token = (
      await api.admin(
        `mutation($h: ID!) { createApiToken(input: { name: "replay-agent", scope: AGENT, hostId: $h }) { ... on CreateApiTokenPayload { created { secret } } } }`,
        { h: hostId },
      )
    ).data!.createApiToken.created.secret as string;
    const agent = api.clientFor(token);
    const sub = socket();
    const audit: { id: string; action: string; objectId: string }[] = [];
    const statuses: { objectId: string; status: string; revision: number }[] = [];
    let ready = 0;
    sub.subscribe<{ auditLogAdded: { id: string; action: string; objectId: string } }>(
      { query: 'subscription { auditLogAdded { id action objectId } }' },
      { next: (m) => m.data && audit.push(m.data.auditLogAdded), error: () => {}, complete: () => {} },
    );
    sub.subscribe<{ objectStatusChanged: { objectId: string; status: string; revision: number } }>(
      { query: 'subscription { objectStatusChanged { objectId status revision } }' },
      { next: (m) => m.data && statuses.push(m.data.objectStatusChanged), error: () => {}, complete: () => {} },
    );
    const events = (controller.store as unknown as { eventTarget: PostgresEventTarget }).eventTarget;
    const admin = postgres(pg.url, { max: 1, onnotice: () => {} });
    try {
      // the subscriptions are live once an entry made now reaches them
      for (let end = Date.now() + 10_000; ready === 0 && Date.now() < end;) {
        await createHost(api.admin, `replay-probe-${Date.now()}`);
        await sleep(200);
        ready = audit.length;
      }
      expect(ready).toBeGreaterThan(0);
      let deaf = 0;
      for (let attempt = 0; attempt < 5 && deaf === 0; attempt++) {
        const relistens = events.relistens;
        const seen = audit.length;
        const seenStatuses = statuses.length;
        await admin`select pg_terminate_backend(pid) from pg_stat_activity where application_name = ${EVENTS_APPLICATION_NAME}`;
        // while it cannot hear: a forward (its audit entry) and the agent's report of it (an audit entry, a status)
        const created = await api.admin(
          `mutation($i: ID!, $p: String!) { createPortForward(input: { instanceId: $i, protocol: TCP, hostPort: $p, targetPort: "80" }) { ... on CreatePortForwardPayload { portForward { id } } } }`,
          { i: vm, p: String(22000 + attempt) },
        );
        const forwardId = created.data!.createPortForward.portForward.id as string;
        const { desiredRevision } = (await api.admin(`query($h: ID!) { host(id: $h) { desiredRevision } }`, { h: hostId })).data!.host;
        const report = await agent(REPORT_OBJECT_STATUS_MUTATION, {
          input: { hostId, revision: desiredRevision, objects: [{ objectType: 'PORT_FORWARD', objectId: forwardId, status: 'APPLIED', error: null }] },
        });
        expect(report.data!.reportObjectStatus.__typename).toBe('ReportObjectStatusPayload');
        const committed = performance.now();
        for (
          let end = Date.now() + 10_000;
          (events.relistens === relistens || !statuses.slice(seenStatuses).some((x) => x.objectId === forwardId)) && Date.now() < end;
        )
          await sleep(20);
        await sleep(300); // a duplicate would come now
        expect(events.relistens).toBeGreaterThan(relistens);
        const mine = audit.slice(seen).filter((e) => e.objectId === forwardId || (e.action === 'host.statusReport' && e.objectId === hostId));
        expect(mine.map((e) => e.action).sort()).toEqual(['host.statusReport', 'portForward.create'].sort());
        expect(new Set(mine.map((e) => e.id)).size).toBe(mine.length);
        expect(
          statuses
            .slice(seenStatuses)
            .filter((x) => x.objectId === forwardId)
            .at(-1),
        ).toMatchObject({ status: 'APPLIED', revision: desiredRevision });
        if (events.relistenedAt! > committed) {
          deaf++;
          expect(events.replayed.webProxyChanged).toBe(1);
          expect(events.replayed.audit).toBeGreaterThanOrEqual(2);
        }
      }
      console.log(
        `[postgres-restart] audit entries and statuses committed while LISTEN was gone reached the subscriptions by the replay (${JSON.stringify(events.replayed)})`,
      );
      expect(deaf).toBe(1);
    } finally {
      await admin.end();
      await sub.dispose();
    }
  }, 90_000);
});
