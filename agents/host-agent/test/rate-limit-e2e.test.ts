/**
 * A forward's connection rate limit end to end as root: a real controller process, the host agent
 * with the Linux plugin, and clients in a namespace. `createPortForward` with `rateLimit
 * { perSource: 50 }` through the public API; one source opens 500 connections per second for a
 * few seconds and the target (a counting server in the instance's namespace) accepts about 50 per
 * second of them (the rate times the seconds plus the burst, ±10 %), while a second source at
 * 20 per second is not limited at all. The connections the limit refused reach the API
 * (`PortForward.rateLimited`): the attempts minus the accepted ones.
 */
import { NetnsLab, labAvailable, tcpConnectRate, type LabNamespace } from '@gatehouse/sdk/testkit';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HostAgent } from '../src/index.js';
import { startLinuxLabHost } from './linux-lab.js';
import { gql, until, type Proc } from './support.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = await labAvailable();

const ERR = '... on Error { code message field value }';
const SECONDS = 4;
const FLOOD = 500;
const OTHER = 20;

/**
 * A TCP server in `ns` on `port` that answers "ok" and counts the connections it accepted per
 * source address; `counts()` asks it (a line on its stdin) for the counts so far.
 */
function countingServer(ns: LabNamespace, port: number): { counts: () => Promise<Record<string, number>>; ready: Promise<void>; child: ChildProcess } {
  const code = `const c={};const s=require('net').createServer(k=>{const a=k.remoteAddress.replace(/^::ffff:/,'');c[a]=(c[a]||0)+1;k.on('error',()=>{});k.end('ok')});
s.listen({port:${port}},()=>console.log('up'));require('readline').createInterface({input:process.stdin}).on('line',()=>console.log(JSON.stringify(c)))`;
  const child = spawn('ip', ['netns', 'exec', ns.name, process.execPath, '-e', code], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! });
  const waiting: ((line: string) => void)[] = [];
  let up: () => void;
  const ready = new Promise<void>((r) => (up = r));
  lines.on('line', (line) => (line === 'up' ? up() : waiting.shift()?.(line)));
  return {
    child,
    ready,
    counts: () =>
      new Promise((resolve) => {
        waiting.push((line) => resolve(JSON.parse(line) as Record<string, number>));
        child.stdin!.write('\n');
      }),
  };
}

describe.skipIf(!available && !REQUIRE_SYSTEM)('forward rate limits end to end', () => {
  const lab = new NetnsLab();
  const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-rate-e2e-'));
  let controller: { proc: Proc; url: string };
  let admin: string;
  let client: LabNamespace;
  let instanceId: string;
  let agent: HostAgent | undefined;
  let server: ReturnType<typeof countingServer> | undefined;
  const api = <T = any>(query: string, variables?: Record<string, unknown>) => gql<T>(controller.url, admin, query, variables);
  const rateLimited = async (id: string) =>
    (await api(`query ($id: ID!) { portForward(id: $id) { rateLimited { connections since } } }`, { id })).portForward.rateLimited as {
      connections: number;
      since: string;
    } | null;

  beforeAll(async () => {
    const host = await lab.namespace('host');
    client = await lab.namespace('cli');
    const vm = await lab.namespace('vm1');
    const { ifA } = await lab.link(client, '198.51.100.2/24', host, '198.51.100.1/24');
    // .2 floods, .3 is the other source, .4 checks that the forward answers (touching neither's bucket)
    for (const a of ['198.51.100.3/24', '198.51.100.4/24']) await client.exec('ip', ['addr', 'add', a, 'dev', ifA]);
    server = countingServer(vm, 8080);
    await server.ready;
    const l = await startLinuxLabHost({ lab, host, vm, dataDir, name: 'rate', subnet: '10.79.0', publicAddress: '198.51.100.1' });
    ({ controller, admin, instanceId, agent } = l);
  }, 120_000);

  afterAll(async () => {
    await agent?.stop();
    server?.child.kill('SIGTERM');
    await controller?.proc.stop('SIGKILL');
    await lab.cleanup();
    rmSync(dataDir, { recursive: true, force: true });
  }, 60_000);

  it(`lets ~50/s of ${FLOOD} connections/s from one source through a 50/s per-source limit made through the API, and another source is unaffected`, async () => {
    const created = await api(
      `mutation ($id: ID!) { createPortForward(input: { instanceId: $id, protocol: TCP, hostPort: "18080", targetPort: "8080", rateLimit: { perSource: 50 } }) { ... on CreatePortForwardPayload { portForward { id rateLimit { perSource total burst action } } } ${ERR} } }`,
      { id: instanceId },
    );
    const forward = created.createPortForward.portForward as { id: string; rateLimit: { burst: number } };
    expect(forward.rateLimit).toEqual({ perSource: 50, total: null, burst: 5, action: 'DROP' });
    const status = async () => (await api(`query ($id: ID!) { portForward(id: $id) { status statusError } }`, { id: forward.id })).portForward;
    expect(await until(async () => (await status()).status === 'APPLIED', 30_000)).toBe(true);
    const answers = async () =>
      (await tcpConnectRate(client, '198.51.100.1', 18080, { rate: 1, seconds: 1, localAddress: '198.51.100.4' })).counts['got:ok'] === 1;
    expect(await until(answers, 20_000)).toBe(true);

    const before = await server!.counts();
    const [flood, other] = await Promise.all([
      tcpConnectRate(client, '198.51.100.1', 18080, { rate: FLOOD, seconds: SECONDS, localAddress: '198.51.100.2' }),
      tcpConnectRate(client, '198.51.100.1', 18080, { rate: OTHER, seconds: SECONDS, localAddress: '198.51.100.3' }),
    ]);
    const after = await server!.counts();
    const accepted = (source: string) => (after[source] ?? 0) - (before[source] ?? 0);
    const through = accepted('198.51.100.2');
    const expected = 50 * flood.seconds + forward.rateLimit.burst;
    console.log(
      `through the API, per-source limit 50/s: the target accepted ${through} of ${FLOOD * SECONDS} in ${flood.seconds} s (expected ${expected.toFixed(0)}); ` +
        `client saw ${JSON.stringify(flood.counts)}; other source: accepted ${accepted('198.51.100.3')}, client saw ${JSON.stringify(other.counts)}`,
    );
    expect(Math.abs(through - expected) / expected).toBeLessThanOrEqual(0.1);
    expect(accepted('198.51.100.3')).toBe(OTHER * SECONDS);
    expect(other.counts).toEqual({ 'got:ok': OTHER * SECONDS });

    // what the limit refused reaches the API: the attempts minus the accepted ones (within the burst)
    const refused = FLOOD * SECONDS - through;
    const reported = await until(async () => {
      const r = await rateLimited(forward.id);
      return r && Math.abs(r.connections - refused) <= forward.rateLimit.burst ? r : undefined;
    }, 20_000);
    console.log(`PortForward.rateLimited: ${JSON.stringify(await rateLimited(forward.id))}, refused by the count at the target: ${refused}`);
    expect(reported).toMatchObject({ since: expect.any(String) });
    expect(Date.parse(reported!.since)).toBeLessThanOrEqual(Date.now());

    // an edit to an overall limit that refuses with a reset: the count goes on from there
    const edited = await api(
      `mutation ($input: UpdatePortForwardInput!) { updatePortForward(input: $input) { ... on UpdatePortForwardPayload { portForward { changedRevision rateLimit { perSource total burst action } } } ${ERR} } }`,
      { input: { portForwardId: forward.id, rateLimit: { total: 30, action: 'REJECT' } } },
    );
    expect(edited.updatePortForward.portForward.rateLimit).toEqual({ perSource: null, total: 30, burst: 5, action: 'REJECT' });
    const revision = edited.updatePortForward.portForward.changedRevision as number;
    expect(
      await until(async () => {
        const f = (await api(`query ($id: ID!) { portForward(id: $id) { status changedRevision } }`, { id: forward.id })).portForward;
        return f.status === 'APPLIED' && f.changedRevision === revision;
      }, 30_000),
    ).toBe(true);
    const countBefore = (await rateLimited(forward.id))!.connections;
    const start = await server!.counts();
    const second = await tcpConnectRate(client, '198.51.100.1', 18080, { rate: FLOOD, seconds: 2, localAddress: '198.51.100.3' });
    const end = await server!.counts();
    const through2 = (end['198.51.100.3'] ?? 0) - (start['198.51.100.3'] ?? 0);
    const expected2 = 30 * second.seconds + 5;
    console.log(
      `overall limit 30/s, REJECT: the target accepted ${through2} of ${FLOOD * 2} (expected ${expected2.toFixed(0)}); client saw ${JSON.stringify(second.counts)}`,
    );
    expect(Math.abs(through2 - expected2) / expected2).toBeLessThanOrEqual(0.1);
    expect(second.counts.refused).toBe(FLOOD * 2 - through2);
    const refused2 = FLOOD * 2 - through2;
    expect(
      await until(async () => (await rateLimited(forward.id))!.connections - countBefore === refused2, 20_000),
      `${(await rateLimited(forward.id))!.connections - countBefore} counted, ${refused2} refused`,
    ).toBe(true);
  }, 180_000);
});
