/**
 * Web terminal tickets through GraphQL on PGlite (single use, expiry on the controller's clock,
 * tenancy, bad login names), learned host keys, and the UTF-8 framing of terminal output. The
 * terminal itself (ssh under node-pty through the jump server) is tested end to end in
 * agents/host-agent/test/ssh-e2e.test.ts.
 */
import 'reflect-metadata';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateEd25519KeyPair } from '../src/ssh/ed25519.js';
import { openStore, type Store } from '../src/db/database.js';
import { createContainer } from '../src/server.js';
import { TerminalService } from '../src/services/terminal-service.js';
import { TerminalRecordingService } from '../src/services/terminal-recording-service.js';
import { sshFingerprint } from '../src/services/ssh-key-service.js';
import { utf8CompletePrefix } from '../src/ssh/terminal-gateway.js';
import { createTestApi, type Client, type TestApi } from '../src/testing/api.js';
import { createHost, createPool } from '../src/testing/fixtures.js';

const OPEN = `mutation($i: ID!, $u: String!) { openTerminal(input: { instanceId: $i, username: $u }) {
  __typename ... on OpenTerminalPayload { terminal { ticket expiresAt instanceId username path } } ... on Error { code message field } } }`;

describe('web terminal tickets and host keys', () => {
  let store: Store;
  let api: TestApi;
  let terminals: TerminalService;
  let tenant: Client;
  let other: Client;
  let vmId: string;
  let now = new Date('2026-12-07T00:00:00Z');
  let recordings: TerminalRecordingService;
  let tenantId: string;
  const recordingsDir = mkdtempSync(join(tmpdir(), 'gatehouse-recordings-'));

  beforeAll(async () => {
    store = await openStore({ kind: 'pglite' });
    const container = createContainer(store, { clock: { now: () => now } });
    api = await createTestApi(store, container);
    terminals = container.resolve(TerminalService);
    recordings = container.resolve(TerminalRecordingService);
    recordings.settings = { dir: recordingsDir, maxBytes: 4096 };
    const t = await api.tenant('tenant');
    tenantId = t.id;
    tenant = t.client;
    other = (await api.tenant('other')).client;
    const hostId = await createHost(api.admin, 'h1');
    await createPool(api.admin, { name: 'p', kind: 'PRIVATE', network: 'br0', cidr: '10.20.0.0/24', gateway: '10.20.0.1' });
    const r = await api.admin(
      `mutation($h: ID!, $o: ID!) { createInstance(input: { hostId: $h, ownerId: $o, name: "vm1", nics: [{ network: "br0", allocate: [IPV4] }] }) { ... on CreateInstancePayload { instance { id } } } }`,
      { h: hostId, o: t.id },
    );
    vmId = r.data.createInstance.instance.id;
  }, 60_000);
  afterAll(async () => {
    await store?.close();
    rmSync(recordingsDir, { recursive: true, force: true });
  });

  it('is refused on a controller without the jump server, saying why', async () => {
    terminals.gatewayRunning = false;
    const r = await tenant(OPEN, { i: vmId, u: 'root' });
    expect(r.data.openTerminal).toMatchObject({ __typename: 'ValidationError', field: 'input.instanceId' });
    expect(r.data.openTerminal.message).toContain('runs no SSH jump server');
    terminals.gatewayRunning = true;
  });

  it('issues a ticket that works once, and not after it expires', async () => {
    const r = await tenant(OPEN, { i: vmId, u: 'root' });
    const ticket = r.data.openTerminal.terminal;
    expect(ticket).toMatchObject({ instanceId: vmId, username: 'root', path: '/terminal' });
    expect(new Date(ticket.expiresAt).getTime() - now.getTime()).toBe(60_000);
    expect(await terminals.redeem(ticket.ticket)).toMatchObject({ instanceId: vmId, username: 'root', userName: 'tenant' });
    expect(await terminals.redeem(ticket.ticket)).toBeUndefined();

    const late = (await tenant(OPEN, { i: vmId, u: 'admin_1' })).data.openTerminal.terminal;
    now = new Date(now.getTime() + 60_001);
    expect(await terminals.redeem(late.ticket)).toBeUndefined();
    expect(await terminals.redeem('ght_not-a-ticket')).toBeUndefined();
    expect(await terminals.redeem(`ght_${'A'.repeat(43)}`)).toBeUndefined();
  });

  it("refuses another tenant's or an unknown instance as NOT_FOUND, and bad login names naming input.username", async () => {
    for (const i of [vmId, '00000000-0000-4000-8000-000000000000']) {
      const r = await other(OPEN, { i, u: 'root' });
      expect(r.data.openTerminal).toMatchObject({ __typename: 'NotFoundError', field: 'input.instanceId' });
    }
    for (const u of ['', 'root\u0000', 'a'.repeat(1 << 20), '-oProxyCommand=x', 'root@evil', 'two words', '1root', 'a'.repeat(33)]) {
      const r = await tenant(OPEN, { i: vmId, u });
      expect(r.data.openTerminal, JSON.stringify(u.slice(0, 20))).toMatchObject({ __typename: 'ValidationError', field: 'input.username' });
      expect(r.data.openTerminal.message.length).toBeLessThan(400);
    }
  });

  it('keeps the first host key of each type, shows it to the owner, and forgets it on request', async () => {
    const key = generateEd25519KeyPair().public.split(' ').slice(0, 2).join(' ');
    const second = generateEd25519KeyPair().public.split(' ').slice(0, 2).join(' ');
    await terminals.learnHostKeys(vmId, [key, 'not a key line', 'ssh-ed25519 !!!']);
    await terminals.learnHostKeys(vmId, [second]);
    const shown = await tenant(`query($i: ID!) { instance(id: $i) { sshHostKeys { algorithm publicKey fingerprint } } }`, { i: vmId });
    const fingerprint = sshFingerprint(Buffer.from(key.split(' ')[1]!, 'base64'));
    expect(shown.data.instance.sshHostKeys).toEqual([{ algorithm: 'ssh-ed25519', publicKey: key, fingerprint }]);
    const forget = `mutation($i: ID!) { forgetInstanceSshHostKeys(input: { instanceId: $i }) { __typename ... on ForgetInstanceSshHostKeysPayload { forgotten { fingerprint } } ... on Error { code field } } }`;
    expect((await other(forget, { i: vmId })).data.forgetInstanceSshHostKeys).toMatchObject({ __typename: 'NotFoundError' });
    expect((await tenant(forget, { i: vmId })).data.forgetInstanceSshHostKeys).toEqual({
      __typename: 'ForgetInstanceSshHostKeysPayload',
      forgotten: [{ fingerprint }],
    });
    expect(await terminals.hostKeys(vmId)).toEqual([]);
  });

  const SET_RECORDING = `mutation($u: ID!, $e: Boolean!) { setTerminalRecording(input: { userId: $u, enabled: $e }) {
    __typename ... on SetTerminalRecordingPayload { user { id terminalRecording } } ... on Error { code message field value } } }`;
  const subject = { userName: 'tenant', instanceName: 'vm1', username: 'root' };

  it('records nothing while recording is off (the default), and a non-admin cannot switch it on', async () => {
    expect((await tenant(`{ me { terminalRecording } }`)).data.me.terminalRecording).toBe(false);
    expect(await recordings.recorderFor({ ...subject, userId: tenantId, instanceId: vmId }, { cols: 80, rows: 24 })).toBeUndefined();
    const refused = await tenant(SET_RECORDING, { u: tenantId, e: true });
    expect(refused.data.setTerminalRecording).toMatchObject({ __typename: 'ForbiddenError', code: 'FORBIDDEN' });
    expect((await tenant(`{ me { terminalRecording } }`)).data.me.terminalRecording).toBe(false);
    expect(await recordings.recorderFor({ ...subject, userId: tenantId, instanceId: vmId }, { cols: 80, rows: 24 })).toBeUndefined();
    expect(readdirSync(recordingsDir)).toEqual([]);
  });

  it('refuses bad input naming the field, and changes nothing', async () => {
    for (const u of ['not-an-id', 'a'.repeat(1 << 20), 'x\u0000']) {
      const r = await api.admin(SET_RECORDING, { u, e: true });
      expect(r.data.setTerminalRecording).toMatchObject({ __typename: 'ValidationError', field: 'input.userId' });
    }
    const missing = await api.admin(SET_RECORDING, { u: '00000000-0000-4000-8000-000000000000', e: true });
    expect(missing.data.setTerminalRecording).toMatchObject({ __typename: 'NotFoundError', field: 'input.userId' });
    const badId = await tenant(`{ terminalRecording(id: "../../etc/passwd") { id } }`);
    expect(badId.errors?.[0]?.message).toContain('id');
    expect((await tenant(`{ me { terminalRecording } }`)).data.me.terminalRecording).toBe(false);
  });

  it('an admin switches it on (audited); the asciicast v2 file is listed to its user and admins only, capped in size', async () => {
    const on = await api.admin(SET_RECORDING, { u: tenantId, e: true });
    expect(on.data.setTerminalRecording).toEqual({ __typename: 'SetTerminalRecordingPayload', user: { id: tenantId, terminalRecording: true } });
    const audit = await api.admin(`query($o: String!) { auditLog(objectType: "User", objectId: $o, first: 5) { edges { node { action before after } } } }`, {
      o: tenantId,
    });
    const entry = audit.data.auditLog.edges.find((e: any) => e.node.action === 'user.setTerminalRecording')?.node;
    expect(entry).toMatchObject({ before: { terminalRecording: false }, after: { terminalRecording: true } });

    const recorder = (await recordings.recorderFor({ ...subject, userId: tenantId, instanceId: vmId }, { cols: 100, rows: 30 }))!;
    expect(recorder).toBeDefined();
    recorder.output(Buffer.from('hello €\r\n'));
    recorder.resize(120, 40);
    for (let i = 0; i < 200; i++) recorder.output(Buffer.from(`line ${i} of output\r\n`));
    expect(recorder.truncated).toBe(true);
    await recorder.close();

    const list = `query($u: ID!) { user(id: $u) { terminalRecordings { id instanceId instanceName username bytes width height cast } } }`;
    const mine = (await tenant(list, { u: tenantId })).data.user.terminalRecordings;
    expect(mine).toHaveLength(1);
    expect(mine[0]).toMatchObject({ instanceId: vmId, instanceName: 'vm1', username: 'root', width: 100, height: 30 });
    expect(mine[0].bytes).toBeLessThanOrEqual(4096);
    const lines = (mine[0].cast as string)
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines[0]).toMatchObject({ version: 2, width: 100, height: 30 });
    expect(typeof lines[0].timestamp).toBe('number');
    expect(lines[1]).toEqual([expect.any(Number), 'o', 'hello €\r\n']);
    expect(lines[2]).toEqual([expect.any(Number), 'r', '120x40']);
    expect(lines.at(-1)).toEqual([expect.any(Number), 'm', 'recording stopped: the size cap of 4096 bytes was reached']);
    for (const event of lines.slice(1)) expect(event[0]).toBeGreaterThanOrEqual(0);

    const byId = `query($i: ID!) { terminalRecording(id: $i) { id cast } }`;
    expect((await api.admin(byId, { i: mine[0].id })).data.terminalRecording.cast).toBe(mine[0].cast);
    expect((await api.admin(list, { u: tenantId })).data.user.terminalRecordings).toHaveLength(1);
    expect((await other(byId, { i: mine[0].id })).data.terminalRecording).toBeNull();

    // switched off again: the next terminal writes nothing
    await api.admin(SET_RECORDING, { u: tenantId, e: false });
    expect(await recordings.recorderFor({ ...subject, userId: tenantId, instanceId: vmId }, { cols: 80, rows: 24 })).toBeUndefined();
    expect(readdirSync(join(recordingsDir, tenantId))).toHaveLength(1);
    expect(existsSync(join(recordingsDir, tenantId, `${mine[0].id}.cast`))).toBe(true);
  });
});

describe('terminal output framing', () => {
  it('cuts a chunk after its last whole UTF-8 character', () => {
    const text = Buffer.from('a€😀é', 'utf8'); // 1 + 3 + 4 + 2 bytes
    const cuts = Array.from({ length: text.length + 1 }, (_, n) => utf8CompletePrefix(text.subarray(0, n)));
    expect(cuts).toEqual([0, 1, 1, 1, 4, 4, 4, 4, 8, 8, 10]);
    // bytes that are not UTF-8 at all are passed on, not held forever
    expect(utf8CompletePrefix(Buffer.from([0x80, 0x80, 0x80, 0x80]))).toBe(4);
  });

  it('rebuilds any text split at every byte boundary exactly', () => {
    const text = 'ñ€😀'.repeat(50) + 'plain';
    const bytes = Buffer.from(text, 'utf8');
    for (let size = 1; size <= 7; size++) {
      let carry = Buffer.alloc(0);
      const frames: string[] = [];
      for (let i = 0; i < bytes.length; i += size) {
        const chunk = Buffer.concat([carry, bytes.subarray(i, i + size)]);
        const cut = utf8CompletePrefix(chunk);
        carry = chunk.subarray(cut);
        if (cut > 0) frames.push(new TextDecoder('utf-8', { fatal: true }).decode(chunk.subarray(0, cut)));
      }
      expect(carry.length).toBe(0);
      expect(frames.join('')).toBe(text);
    }
  });
});
