/**
 * The port audit end to end: a controller process, an agent (in this process, a scripted driver)
 * reading this namespace's sockets, and a real listener (a node server in a child process). The
 * listener shows in `Host.listeningPorts` with its process; a forward on its port is refused with
 * PORT_CONFLICT naming the process (create, update and CSV import); a forward made before a
 * service started listening on its port gets `hostPortWarning` once the agent reports the service,
 * and loses it when the service stops. The same agent answers forward diagnoses through its driver.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { HostAgent } from '../src/index.js';
import { ScriptedDriver } from './scripted-driver.js';
import { gql, startController, until, type Proc } from './support.js';

const ERR = '... on Error { __typename message field value }';
const dataDir = mkdtempSync(join(tmpdir(), 'gh-port-audit-'));
let controller: { proc: Proc; url: string };
let admin: string;
let hostId: string;
let instanceId: string;
let agent: HostAgent;
const children: ChildProcess[] = [];
const api = <T = any>(query: string, variables?: Record<string, unknown>) => gql<T>(controller.url, admin, query, variables);

/** A free TCP port of this namespace (listened on and closed at once). */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '0.0.0.0', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** A node server in a child process listening on `port` on every address; resolves with its pid once it listens. */
async function listener(port: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['-e', `require('node:net').createServer().listen(${port}, '0.0.0.0', () => console.log('up'))`], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once('data', () => resolve());
    child.once('exit', (c) => reject(new Error(`listener exited ${c}`)));
  });
  return child;
}

const listening = async (port: number) =>
  (
    (await api(`query ($id: ID!) { host(id: $id) { listeningPorts { protocol address port process pid } listeningPortsAt } }`, { id: hostId })).host as {
      listeningPorts: { protocol: string; address: string; port: number; process: string | null; pid: number | null }[] | null;
    }
  ).listeningPorts?.find((p) => p.protocol === 'TCP' && p.port === port);

const CREATE = `mutation ($input: CreatePortForwardInput!) { createPortForward(input: $input) { __typename ... on CreatePortForwardPayload { portForward { id hostPortWarning } } ${ERR} } }`;

beforeAll(async () => {
  const c = await startController(dataDir);
  controller = c;
  admin = c.bootstrapSecret!;
  await api(`mutation { createIpPool(input: { name: "audit", kind: PRIVATE, network: "br-audit", cidr: "10.78.0.0/24" }) { ... on CreateIpPoolPayload { pool { id } } ${ERR} } }`);
  // the forwardable range covers the ephemeral ports the kernel hands the test's listeners
  const h = await api(
    `mutation { createHost(input: { name: "audit-host", backend: LINUX, publicAddresses: ["198.51.100.9"], portRangeStart: 1024, portRangeEnd: 65535 }) { ... on CreateHostPayload { host { id } } ${ERR} } }`,
  );
  hostId = h.createHost.host.id;
  const i = await api(
    `mutation ($h: ID!) { createInstance(input: { hostId: $h, name: "vm-audit", nics: [{ network: "br-audit", addresses: ["10.78.0.5"] }] }) { ... on CreateInstancePayload { instance { id } } ${ERR} } }`,
    { h: hostId },
  );
  instanceId = i.createInstance.instance.id;
  const t = await api(
    `mutation ($h: ID!) { createApiToken(input: { name: "agent", scope: AGENT, hostId: $h }) { ... on CreateApiTokenPayload { created { secret } } ${ERR} } }`,
    { h: hostId },
  );
  agent = new HostAgent({
    controllerUrl: controller.url,
    token: t.createApiToken.created.secret,
    driver: new ScriptedDriver(),
    logger: { info() {}, warn() {}, error() {} },
    driftIntervalMs: 200,
    discoverIntervalMs: 300,
    statsIntervalMs: 0,
  });
  await agent.start();
}, 120_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill();
  await agent?.stop();
  await controller?.proc.stop('SIGKILL');
  rmSync(dataDir, { recursive: true, force: true });
}, 60_000);

it('shows a real listener in Host.listeningPorts and refuses a forward on its port with PORT_CONFLICT naming the process', async () => {
  const port = await freePort();
  const child = await listener(port);
  const seen = await until(() => listening(port), 20_000);
  expect(seen).toEqual({ protocol: 'TCP', address: '0.0.0.0', port, process: 'node', pid: child.pid });

  const refused = (await api(CREATE, { input: { instanceId, protocol: 'TCP', hostPort: String(port), targetPort: '80' } })).createPortForward;
  expect(refused.__typename).toBe('PortConflictError');
  expect(refused.field).toBe('input.hostPort');
  expect(refused.message).toContain(`node (pid ${child.pid}) listens on 0.0.0.0:${port}/tcp`);
  // UDP on that port is free: the listener is TCP only
  const udp = (await api(CREATE, { input: { instanceId, protocol: 'UDP', hostPort: String(port), targetPort: '53' } })).createPortForward;
  expect(udp.__typename).toBe('CreatePortForwardPayload');

  // an edit onto the port is refused the same way, and changes nothing
  const other = (await api(CREATE, { input: { instanceId, protocol: 'TCP', hostPort: String(await freePort()), targetPort: '81' } })).createPortForward;
  expect(other.__typename).toBe('CreatePortForwardPayload');
  const edit = (
    await api(`mutation ($input: UpdatePortForwardInput!) { updatePortForward(input: $input) { __typename ${ERR} } }`, {
      input: { portForwardId: other.portForward.id, hostPort: String(port) },
    })
  ).updatePortForward;
  expect(edit.__typename).toBe('PortConflictError');
  expect(edit.message).toContain(`node (pid ${child.pid})`);

  // so is a CSV row
  const csv = `vm_ip,vm_port,host_port,protocol\n10.78.0.5,82,${port},tcp\n`;
  const imported = (
    await api(`mutation ($input: ImportPortForwardsInput!) { importPortForwards(input: $input) { __typename ... on ImportPortForwardsPayload { result { rows { row action reason column } } } ${ERR} } }`, {
      input: { hostId, csv, dryRun: true },
    })
  ).importPortForwards;
  expect(imported.result.rows).toEqual([{ row: 2, action: 'CONFLICT', reason: expect.stringContaining(`node (pid ${child.pid}) listens on 0.0.0.0:${port}/tcp`), column: 'host_port' }]);
}, 60_000);

it('warns on a forward whose port a service started listening on later, and stops warning when it stops', async () => {
  const port = await freePort();
  const made = (await api(CREATE, { input: { instanceId, protocol: 'TCP', hostPort: String(port), targetPort: '8080' } })).createPortForward;
  expect(made.__typename).toBe('CreatePortForwardPayload');
  expect(made.portForward.hostPortWarning).toBeNull();
  const child = await listener(port);
  const warning = async () => ((await api(`query ($id: ID!) { portForward(id: $id) { hostPortWarning } }`, { id: made.portForward.id })).portForward as { hostPortWarning: string | null }).hostPortWarning;
  expect(await until(warning, 20_000)).toBe(`node (pid ${child.pid}) listens on 0.0.0.0:${port}/tcp`);
  await new Promise((r) => {
    child.once('exit', r);
    child.kill();
  });
  expect(await until(async () => (await warning()) === null, 20_000)).toBe(true);
}, 60_000);

it("answers diagnosePortForward through its driver, or says its driver cannot diagnose (the agent's side of the protocol)", async () => {
  const made = (await api(CREATE, { input: { instanceId, protocol: 'TCP', hostPort: String(await freePort()), targetPort: '8081' } })).createPortForward;
  const id = made.portForward.id as string;
  const DIAG = `mutation ($input: DiagnosePortForwardInput!) { diagnosePortForward(input: $input) { __typename ... on DiagnosePortForwardPayload { diagnosis { portForwardId verdict findings { check severity verdict detail } } } ${ERR} } }`;
  // the scripted driver has no diagnoseForward: the agent says so, the caller gets it typed
  const refused = (await api(DIAG, { input: { portForwardId: id } })).diagnosePortForward;
  expect(refused).toMatchObject({ __typename: 'CapabilityNotSupportedError', field: 'input.portForwardId' });
  expect(refused.message).toContain('the scripted driver cannot diagnose forwards');
  // a driver that diagnoses: it gets the state the agent applied (with the forward once applied) and the source address
  const seen: { forwardId: string; sourceAddress?: string | null; applied: boolean }[] = [];
  (agent as unknown as { options: { driver: ScriptedDriver & { diagnoseForward?: unknown } } }).options.driver.diagnoseForward = async (
    _ctx: unknown,
    input: { desired: { instances: { portForwards: { id: string }[] }[] }; forwardId: string; sourceAddress?: string | null },
  ) => {
    const applied = input.desired.instances.some((i) => i.portForwards.some((f) => f.id === input.forwardId));
    seen.push({ forwardId: input.forwardId, sourceAddress: input.sourceAddress, applied });
    return applied
      ? { forwardId: input.forwardId, verdict: 'OK', findings: [{ check: 'forward', severity: 'PASS', verdict: 'OK', detail: 'in the applied state' }] }
      : { forwardId: input.forwardId, verdict: 'NOT_APPLIED', findings: [{ check: 'forward', severity: 'FAULT', verdict: 'NOT_APPLIED', detail: 'not applied yet' }] };
  };
  const answered = await until(async () => {
    const r = (await api(DIAG, { input: { portForwardId: id, sourceAddress: '203.0.113.4' } })).diagnosePortForward;
    return r.diagnosis?.verdict === 'OK' ? r : undefined;
  }, 20_000);
  expect(answered.diagnosis).toEqual({ portForwardId: id, verdict: 'OK', findings: [{ check: 'forward', severity: 'PASS', verdict: 'OK', detail: 'in the applied state' }] });
  expect(seen.at(-1)).toEqual({ forwardId: id, sourceAddress: '203.0.113.4', applied: true });
}, 60_000);
