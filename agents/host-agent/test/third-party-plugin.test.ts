/**
 * A third-party plugin end to end, no root needed: the SDK's example plugin (json-file), loaded by
 * module specifier through `loadDriver` into a real HostAgent, connected to a real controller
 * with a host whose backend is the plugin's id. Its capabilities show in `Host.driver`, an object
 * it cannot apply (a bandwidth limit: it declares no shaping) is refused at the API, and one it
 * can (a port forward) becomes APPLIED and lands in the plugin's file.
 */
import { loadDriver } from '@gatehouse/sdk';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { HostAgent } from '../src/index.js';
import { gql, startController, until, type Proc } from './support.js';

const PLUGIN = fileURLToPath(new URL('../../../core/sdk/examples/json-file-plugin.ts', import.meta.url));
const ERR = '... on Error { code message field value }';

const dir = mkdtempSync(join(tmpdir(), 'gatehouse-3p-'));
const file = join(dir, 'forwards.json');
let controller: { proc: Proc; url: string };
let admin: string;
let agent: HostAgent | undefined;
let hostId: string;
let instanceId: string;
const api = <T = any>(query: string, variables?: Record<string, unknown>) => gql<T>(controller.url, admin, query, variables);

beforeAll(async () => {
  const started = await startController(join(dir, 'data'));
  controller = started;
  admin = started.bootstrapSecret!;
  const host = await api(
    `mutation { createHost(input: { name: "files", backend: "json-file", publicAddresses: ["198.51.100.7"] }) { ... on CreateHostPayload { host { id backend } } ${ERR} } }`,
  );
  hostId = host.createHost.host.id;
  expect(host.createHost.host.backend).toBe('json-file');
  await api(`mutation { createIpPool(input: { name: "p3", kind: PRIVATE, network: "br3", cidr: "10.77.0.0/24" }) { __typename ${ERR} } }`);
  const vm = await api(
    `mutation($h: ID!) { createInstance(input: { hostId: $h, name: "vm3", nics: [{ network: "br3", allocate: [IPV4] }] }) { ... on CreateInstancePayload { instance { id } } ${ERR} } }`,
    { h: hostId },
  );
  instanceId = vm.createInstance.instance.id;
  const token = await api(
    `mutation($h: ID!) { createApiToken(input: { name: "agent-3p", scope: AGENT, hostId: $h }) { ... on CreateApiTokenPayload { created { secret } } ${ERR} } }`,
    { h: hostId },
  );
  const ctx = {
    logger: { debug() {}, info() {}, warn() {}, error() {} },
    signal: new AbortController().signal,
    host: { id: hostId, name: 'files', publicAddresses: [] },
  };
  const driver = await loadDriver(PLUGIN, { path: file }, ctx);
  agent = new HostAgent({ controllerUrl: controller.url, token: token.createApiToken.created.secret, driver, logger: ctx.logger, driftIntervalMs: 60_000 });
  await agent.start();
}, 120_000);

afterAll(async () => {
  await agent?.stop();
  await controller?.proc.stop();
  rmSync(dir, { recursive: true, force: true });
});

it("shows the plugin's capabilities in Host.driver once its agent connected", async () => {
  const driver = await until(
    async () =>
      (
        await api(
          `query($id: ID!) { host(id: $id) { driver { id apiVersion capabilities { portForwards { protocols ipv6 } shaping { ingress } nics { max } } } } }`,
          { id: hostId },
        )
      ).host.driver,
    30_000,
  );
  expect(driver).toEqual({
    id: 'json-file',
    apiVersion: 1,
    capabilities: { portForwards: { protocols: ['TCP', 'UDP'], ipv6: true }, shaping: null, nics: { max: 64 } },
  });
});

it('refuses what the plugin cannot apply, and applies what it can', async () => {
  const limit = await api(
    `mutation($i: ID!) { setBandwidthLimit(input: { instanceId: $i, ingressMbps: 10 }) { __typename ... on CapabilityNotSupportedError { capability } ${ERR} } }`,
    { i: instanceId },
  );
  expect(limit.setBandwidthLimit).toMatchObject({
    __typename: 'CapabilityNotSupportedError',
    code: 'CAPABILITY_NOT_SUPPORTED',
    capability: 'shaping',
    field: 'input.ingressMbps',
  });
  expect(limit.setBandwidthLimit.message).toBe(
    'Failed setting bandwidth limit on host files: its driver json-file does not support bandwidth limits (capabilities.shaping)',
  );
  const created = await api(
    `mutation($i: ID!) { createPortForward(input: { instanceId: $i, protocol: TCP, hostPort: "2222", targetPort: "22" }) { ... on CreatePortForwardPayload { portForward { id } } ${ERR} } }`,
    { i: instanceId },
  );
  const id = created.createPortForward.portForward.id;
  const status = await until(async () => {
    const s = (await api(`query($id: ID!) { portForward(id: $id) { status statusError } }`, { id })).portForward;
    return s.status === 'APPLIED' ? s : undefined;
  }, 30_000);
  expect(status).toEqual({ status: 'APPLIED', statusError: null });
  const content = JSON.parse(readFileSync(file, 'utf8'));
  expect(content.instances[instanceId].forwards).toMatchObject([{ protocol: 'tcp', hostAddress: '198.51.100.7', hostPort: 2222, targetPort: 22 }]);
});
