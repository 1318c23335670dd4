/**
 * The Proxmox VE test server, without root (guests recorded, not in namespaces), through the
 * plugin's own client: every parameter of every path the plugin calls, broken one way at a time
 * (generated from the schema), is refused with 400 and PVE's body naming that parameter; unknown
 * paths and methods are 501; tokens are checked (401, 403 naming the privilege); TLS is verified
 * (a pinned fingerprint, a CA file; a wrong pin never gets an answer); tasks finish after a delay
 * with their exit status; faults (5xx, resets, failing tasks, digest conflicts) surface as the
 * plugin's typed errors.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DriverConfigError, HostUnreachableError, TransientError } from '@gatehouse/sdk';
import { PveApiError, PveClient, PveConnectionError, PveTaskError, isDigestConflict, pveError, validateConfig } from '../src/index.js';
import { PVE_CALLS } from '../src/pve-paths.js';
import { PveSchema, PveTestServer, RecordingBacking, violations } from '../src/testing.js';

const TOKEN = 'gatehouse@pve!agent';
const SECRET = '5d5e0c3a-0b0e-4e8e-9d47-2f1a6c1b7e01';
const schema = PveSchema.load();
let server: PveTestServer;
let client: PveClient;

const clientFor = (extra: Record<string, unknown> = {}) =>
  new PveClient(validateConfig({ url: server.url, tokenId: TOKEN, secret: SECRET, fingerprint: server.fingerprint, node: 'pve1', ...extra }));

beforeAll(async () => {
  server = new PveTestServer(schema, new RecordingBacking());
  server.addToken(TOKEN, SECRET, '*');
  server.faults.taskDelayMs = 20;
  await server.start();
  client = clientFor();
  await server.addGuest({ vmid: 100, type: 'qemu', node: 'pve1', status: 'running', config: { name: 'vm100', net0: 'virtio=BC:24:11:00:00:01,bridge=vmbr0' } });
  await server.addGuest({
    vmid: 101,
    type: 'lxc',
    node: 'pve1',
    status: 'running',
    config: { hostname: 'ct101', net0: 'name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:02,ip=10.77.0.20/24,type=veth' },
  });
});

afterAll(() => server?.close());

/** The path of a template with these parameters, and the rest as query or body parameters. */
function request(template: string, params: Record<string, string>): { path: string; rest: Record<string, string> } {
  const rest = { ...params };
  const path = template.replace(/\{(\w+)\}/g, (_, name: string) => {
    const v = rest[name] ?? '';
    delete rest[name];
    return encodeURIComponent(v);
  });
  return { path, rest };
}

describe('schema enforcement', () => {
  const base: Record<string, string> = { node: 'pve1', vmid: '100', upid: 'UPID:pve1:00001092:00000001:00000000:qmconfig:100:gatehouse@pve!agent:' };

  for (const [method, template] of PVE_CALLS) {
    it(`refuses every violation of ${method} ${template}, naming the parameter`, async () => {
      const schemaMethod = schema.method(template, method);
      const names = Object.keys(schemaMethod.parameters?.properties ?? {});
      const own = Object.fromEntries(names.filter((n) => n in base).map((n) => [n, base[n]!]));
      const cases = violations(schemaMethod, own).filter((v) => !(v.kind === 'missing' && template.includes(`{${v.param}}`)));
      expect(cases.length).toBeGreaterThan(0);
      const accepted: string[] = [];
      for (const v of cases) {
        const { path, rest } = request(template, v.params);
        try {
          await client.call(method, path, rest);
          accepted.push(`${v.param} (${v.kind}): accepted`);
        } catch (err) {
          if (!(err instanceof PveApiError) || err.status !== 400 || !err.errors?.[v.param])
            accepted.push(`${v.param} (${v.kind}): ${err instanceof Error ? err.message : String(err)}`);
        }
      }
      expect(accepted).toEqual([]);
    });
  }

  it('checks netN sub-keys of both formats, with default keys and model aliases', async () => {
    const post = (value: string) =>
      client.call('POST', '/nodes/pve1/qemu/100/config', { net3: value }).then(
        () => 'accepted',
        (err: PveApiError) => err.errors?.net3 ?? err.message,
      );
    expect(await post('virtio=BC:24:11:00:00:09,bridge=vmbr0,tag=4095')).toMatch(/tag: value must have a maximum value of 4094/);
    expect(await post('virtio=BC:24:11:00:00:09,bridge=vmbr0,colour=red')).toMatch(/property 'colour' is not defined/);
    expect(await post('virtio=01:24:11:00:00:09')).toMatch(/macaddr/); // the group bit set
    expect(await post('virtio,bridge=vmbr0,rate=fast')).toMatch(/rate: type check \('number'\) failed/);
    expect(await post('bridge=vmbr0')).toMatch(/model: property is missing/);
    const put = (value: string) =>
      client.call('PUT', '/nodes/pve1/lxc/101/config', { net2: value }).then(
        () => 'accepted',
        (err: PveApiError) => err.errors?.net2 ?? err.message,
      );
    expect(await put('bridge=vmbr0,hwaddr=BC:24:11:00:00:0A')).toMatch(/name: property is missing/);
    expect(await put('name=eth2,bridge=vmbr0,ip=10.77.0.300/24')).toMatch(/ip: value does not look like a valid pve-ipv4-config/);
    expect(await put('name=eth2,bridge=vmbr0,type=macvlan')).toMatch(/type: value 'macvlan' does not have a value in the enumeration/);
  });

  it('answers 501 for paths and methods the API does not have, and 400 with PVE body shape', async () => {
    await expect(client.call('GET', '/nodes/pve1/qemu/100/frobnicate')).rejects.toMatchObject({ status: 501 });
    await expect(client.call('DELETE', '/version')).rejects.toMatchObject({ status: 501 });
    const err = (await client.get('/cluster/resources', { type: 'vms' }).catch((e: unknown) => e)) as PveApiError;
    expect(err).toBeInstanceOf(PveApiError);
    expect(err.status).toBe(400);
    expect(err.reason).toBe('Parameter verification failed.');
    expect(err.errors).toEqual({ type: "value 'vms' does not have a value in the enumeration 'vm, storage, node, sdn'" });
  });
});

describe('tokens and TLS', () => {
  it('refuses a wrong secret and an expired token with 401, mapped to a config error naming the token', async () => {
    const wrong = clientFor({ secret: '00000000-0000-0000-0000-000000000000' });
    const err = await wrong.get('/version').catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 401 });
    const mapped = pveError(err, 'listing guests', wrong.config);
    expect(mapped).toBeInstanceOf(DriverConfigError);
    expect((mapped as DriverConfigError).path).toBe('config.tokenId');
    server.addToken('old@pve!gone', SECRET, '*');
    server.tokens.get('old@pve!gone')!.expired = true;
    await expect(clientFor({ tokenId: 'old@pve!gone' }).get('/version')).rejects.toMatchObject({ status: 401, reason: 'authentication failure' });
  });

  it('answers 403 naming the privilege a token lacks, and lists no guests without VM.Audit', async () => {
    server.addToken('audit@pve!ro', SECRET, ['VM.Audit']);
    const ro = clientFor({ tokenId: 'audit@pve!ro' });
    // the schema's own check: any of the VM.Config.* privileges
    const none = await ro.call('POST', '/nodes/pve1/qemu/100/config', { tags: 'x' }).catch((e: PveApiError) => e.reason);
    expect(none).toMatch(/^Permission check failed \(\/vms\/100, VM\.Config\.Disk\|.*VM\.Config\.Network/);
    // the per-key check of a NIC change
    server.tokens.get('audit@pve!ro')!.privileges = new Set(['VM.Audit', 'VM.Config.Options']);
    const err = await ro.call('POST', '/nodes/pve1/qemu/100/config', { net5: 'virtio=BC:24:11:00:00:05,bridge=vmbr0' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 403, reason: 'Permission check failed (/vms/100, VM.Config.Network)' });
    expect(pveError(err, 'adding net5', ro.config).message).toMatch(/lacks the privilege VM\.Config\.Network on \/vms\/100/);
    server.addToken('none@pve!noaudit', SECRET, []);
    expect(await clientFor({ tokenId: 'none@pve!noaudit' }).get('/cluster/resources', { type: 'vm' })).toEqual([]);
  });

  it('verifies the certificate: pinned fingerprint, CA file, and a wrong pin gets no answer', async () => {
    expect(await clientFor({ fingerprint: undefined, caFile: server.caFile }).get('/version')).toMatchObject({ release: '9.1' });
    const before = server.log.length;
    const wrongPin = clientFor({ fingerprint: server.fingerprint.replace(/^../, server.fingerprint.startsWith('00') ? '11' : '00') });
    const err = await wrongPin.get('/version').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PveConnectionError);
    expect((err as PveConnectionError).kind).toBe('tls');
    expect(pveError(err, 'x', wrongPin.config)).toMatchObject({ path: 'config.fingerprint' });
    // the request (and the token in it) was never sent
    expect(server.log.length).toBe(before);
    const systemCas = clientFor({ fingerprint: undefined });
    expect(await systemCas.get('/version').catch((e: PveConnectionError) => e.kind)).toBe('tls');
  });
});

describe('tasks and faults', () => {
  it('runs a config change as a task that stops with OK; a failing one stops with its exit status', async () => {
    const upid = await client.call<string>('POST', '/nodes/pve1/qemu/100/config', { net1: 'virtio=BC:24:11:00:00:11,bridge=vmbr0' });
    expect(upid).toMatch(/^UPID:pve1:/);
    await client.waitTask(upid);
    expect((await client.get<Record<string, string>>('/nodes/pve1/qemu/100/config')).net1).toBe('virtio=BC:24:11:00:00:11,bridge=vmbr0');
    server.faults.failTasks = 1;
    const failing = await client.call<string>('POST', '/nodes/pve1/qemu/100/config', { net2: 'virtio=BC:24:11:00:00:12,bridge=vmbr0' });
    const err = await client.waitTask(failing).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PveTaskError);
    expect((err as PveTaskError).exitstatus).toMatch(/^net2: hotplug problem/);
    expect(pveError(err, 'adding net2', client.config)).toBeInstanceOf(TransientError);
    const pending = await client.get<{ key: string; pending?: string }[]>('/nodes/pve1/qemu/100/pending');
    expect(pending.find((p) => p.key === 'net2')?.pending).toBe('virtio=BC:24:11:00:00:12,bridge=vmbr0');
  });

  it('refuses an edit with a stale digest: the QEMU task fails, the LXC call answers 500', async () => {
    const { digest } = await client.get<{ digest: string }>('/nodes/pve1/qemu/100/config');
    server.faults.digestConflicts = 1;
    const upid = await client.call<string>('POST', '/nodes/pve1/qemu/100/config', { digest, tags: 'x' });
    const err = await client.waitTask(upid).catch((e: unknown) => e);
    expect(isDigestConflict(err)).toBe(true);
    const ct = await client.get<{ digest: string }>('/nodes/pve1/lxc/101/config');
    server.faults.digestConflicts = 1;
    const lxcErr = await client.call('PUT', '/nodes/pve1/lxc/101/config', { digest: ct.digest, tags: 'x' }).catch((e: unknown) => e);
    expect(lxcErr).toMatchObject({ status: 500 });
    expect(isDigestConflict(lxcErr)).toBe(true);
  });

  it('answers 5xx and resets connections when told, and is unreachable when stopped', async () => {
    server.faults.serverErrors = 1;
    const e500 = await client.get('/version').catch((e: unknown) => e);
    expect(pveError(e500, 'x', client.config)).toBeInstanceOf(TransientError);
    server.faults.resets = 1;
    const reset = await client.get('/version').catch((e: unknown) => e);
    expect(reset).toMatchObject({ kind: 'reset' });
    expect(pveError(reset, 'x', client.config)).toBeInstanceOf(TransientError);
    await server.stop();
    const down = await client.get('/version').catch((e: unknown) => e);
    expect(pveError(down, 'x', client.config)).toBeInstanceOf(HostUnreachableError);
    await server.start();
    expect(await client.get('/version')).toMatchObject({ version: '9.1.3' });
  });
});
