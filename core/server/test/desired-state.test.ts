/**
 * The per-host desired state: every change shows in the next revision, the document is
 * deterministic, and agents receive it over graphql-ws (full state, then each new revision).
 */
import { applyDesiredStatePatch, type DesiredStatePatch } from '@gatehouse/agent-protocol';
import type { DesiredState } from '@gatehouse/sdk';
import { createClient, type Client as WsClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import { startController, type Controller } from '../src/server.js';
import { DesiredStateService } from '../src/services/desired-state-service.js';
import { ERROR_FIELDS, createTestApi, type TestApi } from '../src/testing/api.js';
import { createHost, createPool } from '../src/testing/fixtures.js';
import { storeBackends } from '../src/testing/stores.js';
import { useStoreApi } from './support/suite.js';

const backends = await storeBackends();
const STATE = `query($h: ID!) { hostDesiredState(hostId: $h) { revision apiVersion document } }`;

describe.each(backends)('desired state on $name', (backend) => {
  const ctx = useStoreApi(backend, 'host-ds');
  const state = async () => (await ctx.api.admin(STATE, { h: ctx.hostId })).data!.hostDesiredState;

  it('reflects every change in the next revision', async () => {
    await createPool(ctx.api.admin, { name: 'ds', kind: 'PRIVATE', network: 'br-ds', cidr: '10.12.0.0/24', gateway: '10.12.0.1', dns: ['10.12.0.1'] });
    let last = (await state()).revision as number;
    const step = async (label: string, mutation: string, vars: Record<string, unknown>, check: (doc: any) => void) => {
      const r = await ctx.api.admin(mutation, vars);
      const payload = Object.values(r.data ?? {})[0] as { __typename?: string; code?: string } | undefined;
      expect(payload?.code, `${label}: ${JSON.stringify(r)}`).toBeUndefined();
      const now = await state();
      expect(now.revision, label).toBeGreaterThan(last);
      last = now.revision;
      check(now.document);
      return r;
    };
    const created = await step(
      'create instance',
      `mutation($h: ID!) { createInstance(input: { hostId: $h, name: "vm-ds", nics: [{ network: "br-ds" }] }) { __typename ... on CreateInstancePayload { instance { id nics { id } } } ${ERROR_FIELDS} } }`,
      { h: ctx.hostId },
      (doc) => {
        expect(doc.instances).toHaveLength(1);
        expect(doc.instances[0].nics[0].addresses).toEqual([
          { address: '10.12.0.2', prefixLength: 24, delegated: false, gateway: '10.12.0.1', dns: ['10.12.0.1'] },
        ]);
        expect(doc.instances[0].firewall).toEqual({ inboundPolicy: 'allow', outboundPolicy: 'allow', rules: [] });
      },
    );
    const vm = created.data!.createInstance.instance;
    const fwd = await step(
      'create forward',
      `mutation($i: ID!) { createPortForward(input: { instanceId: $i, protocol: TCP, hostPort: "10022", targetPort: "22", sourceCidrs: ["198.51.100.0/24"] }) { __typename ... on CreatePortForwardPayload { portForward { id } } ${ERROR_FIELDS} } }`,
      { i: vm.id },
      (doc) =>
        expect(doc.instances[0].portForwards).toEqual([
          {
            id: expect.any(String),
            protocol: 'tcp',
            hostAddress: null,
            hostPorts: { start: 10022, end: 10022 },
            targetAddress: '10.12.0.2',
            targetPorts: { start: 22, end: 22 },
            sourceCidrs: ['198.51.100.0/24'],
          },
        ]),
    );
    const rule = await step(
      'add firewall rule',
      `mutation($i: ID!) { addFirewallRule(input: { instanceId: $i, direction: INBOUND, protocol: TCP, ports: "80,443", action: DROP, priority: 10 }) { __typename ... on AddFirewallRulePayload { rule { id } } ${ERROR_FIELDS} } }`,
      { i: vm.id },
      (doc) =>
        expect(doc.instances[0].firewall.rules).toMatchObject([
          {
            direction: 'inbound',
            protocol: 'tcp',
            action: 'drop',
            priority: 10,
            ports: [
              { start: 80, end: 80 },
              { start: 443, end: 443 },
            ],
          },
        ]),
    );
    await step(
      'disable the rule',
      `mutation($r: ID!) { updateFirewallRule(input: { ruleId: $r, enabled: false }) { __typename ${ERROR_FIELDS} } }`,
      { r: rule.data!.addFirewallRule.rule.id },
      (doc) => expect(doc.instances[0].firewall.rules).toEqual([]),
    );
    await step(
      'set a policy',
      `mutation($i: ID!) { setFirewallPolicy(input: { instanceId: $i, inbound: REJECT }) { __typename ${ERROR_FIELDS} } }`,
      { i: vm.id },
      (doc) => expect(doc.instances[0].firewall.inboundPolicy).toBe('reject'),
    );
    await step(
      'limit bandwidth',
      `mutation($i: ID!) { setBandwidthLimit(input: { instanceId: $i, egressMbps: 8 }) { __typename ${ERROR_FIELDS} } }`,
      { i: vm.id },
      (doc) => expect(doc.instances[0].bandwidth).toMatchObject([{ nicId: null, egressBps: 8_000_000, egressBurstBytes: 15_000, ingressBps: null }]),
    );
    await step('add a NIC', `mutation($i: ID!) { addNic(input: { instanceId: $i, network: "br-ds" }) { __typename ${ERROR_FIELDS} } }`, { i: vm.id }, (doc) =>
      expect(doc.instances[0].nics.map((n: { name: string }) => n.name)).toEqual(['eth0', 'eth1']),
    );
    await step(
      'delete the forward',
      `mutation($f: ID!) { deletePortForward(input: { portForwardId: $f }) { __typename ${ERROR_FIELDS} } }`,
      { f: fwd.data!.createPortForward.portForward.id },
      (doc) => expect(doc.instances[0].portForwards).toEqual([]),
    );
    await step('delete the instance', `mutation($i: ID!) { deleteInstance(input: { instanceId: $i }) { __typename ${ERROR_FIELDS} } }`, { i: vm.id }, (doc) =>
      expect(doc.instances).toEqual([]),
    );
  });

  it('serialises the same state identically', async () => {
    const a = await state();
    const b = await state();
    expect(JSON.stringify(b)).toBe(JSON.stringify(a));
  });
});

describe('hostDesiredState over graphql-ws', () => {
  let controller: Controller;
  let api: TestApi;
  let hostId: string;
  let otherHostId: string;
  const clients: WsClient[] = [];

  beforeAll(async () => {
    controller = await startController({ store: { kind: 'pglite' }, port: 0, bootstrap: false });
    api = await createTestApi(controller.store, controller.container);
    hostId = await createHost(api.admin, 'agent-host');
    otherHostId = await createHost(api.admin, 'other-host');
    await createPool(api.admin, { name: 'ws', kind: 'PRIVATE', network: 'br-ws', cidr: '10.13.0.0/24' });
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.dispose()));
    await controller?.close();
  });

  async function agentToken(host: string): Promise<string> {
    const me = await api.admin(`{ me { id } }`);
    const r = await api.admin(
      `mutation($u: ID!, $h: ID!) { createApiToken(input: { userId: $u, name: "agent", scope: AGENT, hostId: $h }) { ... on CreateApiTokenPayload { created { secret } } } }`,
      {
        u: me.data!.me.id,
        h: host,
      },
    );
    return r.data!.createApiToken.created.secret;
  }

  function subscribe(secret: string, host: string) {
    const client = createClient({
      url: controller.url.replace('http://', 'ws://'),
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      connectionParams: { Authorization: `Bearer ${secret}` },
    });
    clients.push(client);
    const received: { revision: number; document: { instances: unknown[] } }[] = [];
    const errors: unknown[] = [];
    client.subscribe<{ hostDesiredState: { revision: number; document: { instances: unknown[] } } }>(
      { query: 'subscription($h: ID!) { hostDesiredState(hostId: $h) { revision document } }', variables: { h: host } },
      { next: (m) => (m.data ? received.push(m.data.hostDesiredState) : errors.push(m.errors)), error: (e) => errors.push(e), complete: () => {} },
    );
    return { received, errors };
  }

  const until = async (check: () => boolean, what: string) => {
    for (let i = 0; i < 100 && !check(); i++) await new Promise((r) => setTimeout(r, 50));
    expect(check(), what).toBe(true);
  };

  it("streams the full state to the host's agent, then each new revision", async () => {
    const { received } = subscribe(await agentToken(hostId), hostId);
    await until(() => received.length === 1, 'initial state');
    const first = received[0]!.revision;
    await api.admin(`mutation($h: ID!) { createInstance(input: { hostId: $h, name: "streamed", nics: [{ network: "br-ws" }] }) { __typename } }`, {
      h: hostId,
    });
    await until(() => received.length >= 2, 'a new revision');
    expect(received.at(-1)!.revision).toBeGreaterThan(first);
    expect(received.at(-1)!.document.instances).toHaveLength(1);
    // a change on another host sends nothing here
    const count = received.length;
    await api.admin(`mutation($h: ID!) { createInstance(input: { hostId: $h, name: "elsewhere" }) { __typename } }`, { h: otherHostId });
    await new Promise((r) => setTimeout(r, 300));
    expect(received.length).toBe(count);
  });

  it("streams changes as patches that rebuild each revision exactly, and refuses other hosts' agents", async () => {
    const client = createClient({
      url: controller.url.replace('http://', 'ws://'),
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      connectionParams: { Authorization: `Bearer ${await agentToken(hostId)}` },
    });
    clients.push(client);
    const messages: { revision: number; full: DesiredState | null; patch: DesiredStatePatch | null }[] = [];
    client.subscribe<{ hostDesiredStateChanges: (typeof messages)[number] }>(
      { query: 'subscription($h: ID!) { hostDesiredStateChanges(hostId: $h) { revision full patch } }', variables: { h: hostId } },
      { next: (m) => void (m.data && messages.push(m.data.hostDesiredStateChanges)), error: () => {}, complete: () => {} },
    );
    await until(() => messages.length === 1, 'the full document');
    expect(messages[0]!.full).toBeTruthy();
    expect(messages[0]!.patch).toBeNull();
    const vm = (
      await api.admin(
        `mutation($h: ID!) { createInstance(input: { hostId: $h, name: "patched", nics: [{ network: "br-ws" }] }) { ... on CreateInstancePayload { instance { id } } } }`,
        {
          h: hostId,
        },
      )
    ).data!.createInstance.instance.id as string;
    await api.admin(`mutation($i: ID!) { createPortForward(input: { instanceId: $i, protocol: TCP, hostPort: "24001", targetPort: "22" }) { __typename } }`, {
      i: vm,
    });
    await until(() => messages.at(-1)!.patch?.portForwards.length === 1, 'a patch with the new forward');
    // a deletion (read back in full) and another creation (only the new rows read)
    const second = (
      await api.admin(
        `mutation($i: ID!) { createPortForward(input: { instanceId: $i, protocol: UDP, hostPort: "24002", targetPort: "53" }) { ... on CreatePortForwardPayload { portForward { id } } } }`,
        { i: vm },
      )
    ).data!.createPortForward.portForward.id as string;
    await until(() => messages.at(-1)!.patch?.portForwards.some((f) => f.forward.id === second) ?? false, 'a patch with the second forward');
    await api.admin(`mutation($id: ID!) { deletePortForward(input: { portForwardId: $id }) { __typename } }`, { id: second });
    await until(() => messages.at(-1)!.patch?.removedPortForwards.includes(second) ?? false, 'a patch removing it');
    await api.admin(`mutation($i: ID!) { createPortForward(input: { instanceId: $i, protocol: TCP, hostPort: "24003", targetPort: "23" }) { __typename } }`, {
      i: vm,
    });
    await until(() => messages.at(-1)!.patch?.portForwards.some((f) => f.forward.hostPorts.start === 24003) ?? false, 'a patch with the third forward');
    // folding the patches into the first document gives what the controller holds now
    let state = messages[0]!.full!;
    for (const m of messages.slice(1)) {
      expect(m.full).toBeNull();
      state = applyDesiredStatePatch(state, m.patch).state;
    }
    const now = (await api.admin(`query($h: ID!) { hostDesiredState(hostId: $h) { document } }`, { h: hostId })).data!.hostDesiredState
      .document as DesiredState;
    expect(state).toEqual(now);
    expect(JSON.stringify(messages.at(-1)!.patch).length).toBeLessThan(1000);

    const wrong = createClient({
      url: controller.url.replace('http://', 'ws://'),
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      connectionParams: { Authorization: `Bearer ${await agentToken(otherHostId)}` },
    });
    clients.push(wrong);
    const errors: unknown[] = [];
    wrong.subscribe(
      { query: 'subscription($h: ID!) { hostDesiredStateChanges(hostId: $h) { revision } }', variables: { h: hostId } },
      { next: (m) => void (m.errors && errors.push(m.errors)), error: (e) => void errors.push(e), complete: () => {} },
    );
    await until(() => errors.length > 0, 'an error for the wrong host');
    expect(JSON.stringify(errors)).toContain('FORBIDDEN');
  });

  it("sends edits and deletions as patches of what changed (tombstones), without reading the host's whole state again", async () => {
    const tombHost = await createHost(api.admin, 'tombstone-host');
    const client = createClient({
      url: controller.url.replace('http://', 'ws://'),
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      connectionParams: { Authorization: `Bearer ${await agentToken(tombHost)}` },
    });
    clients.push(client);
    const messages: { revision: number; full: DesiredState | null; patch: DesiredStatePatch | null }[] = [];
    client.subscribe<{ hostDesiredStateChanges: (typeof messages)[number] }>(
      { query: 'subscription($h: ID!) { hostDesiredStateChanges(hostId: $h) { revision full patch } }', variables: { h: tombHost } },
      { next: (m) => void (m.data && messages.push(m.data.hostDesiredStateChanges)), error: () => {}, complete: () => {} },
    );
    await until(() => messages.length === 1, 'the full document');
    const createVm = async (name: string) =>
      (
        await api.admin(
          `mutation($h: ID!, $n: String!) { createInstance(input: { hostId: $h, name: $n, nics: [{ network: "br-ws" }] }) { ... on CreateInstancePayload { instance { id } } } }`,
          { h: tombHost, n: name },
        )
      ).data!.createInstance.instance.id as string;
    const vm = await createVm('kept');
    const doomedVm = await createVm('doomed');
    const forward = async (instance: string, port: number) =>
      (
        await api.admin(
          `mutation($i: ID!, $p: String!) { createPortForward(input: { instanceId: $i, protocol: TCP, hostPort: $p, targetPort: "80" }) { ... on CreatePortForwardPayload { portForward { id } } } }`,
          { i: instance, p: String(port) },
        )
      ).data!.createPortForward.portForward.id as string;
    const [edited, deleted, kept, ofDoomed] = [await forward(vm, 25001), await forward(vm, 25002), await forward(vm, 25003), await forward(doomedVm, 25004)];
    await until(() => messages.at(-1)!.patch?.portForwards.some((f) => f.forward.id === ofDoomed) ?? false, 'the fourth forward');

    const compile = vi.spyOn(DesiredStateService.prototype as unknown as { compile: () => Promise<DesiredState> }, 'compile');
    try {
      const seen = messages.length;
      await api.admin(`mutation($id: ID!) { updatePortForward(input: { portForwardId: $id, targetPort: "8080" }) { __typename } }`, { id: edited });
      await until(() => messages.at(-1)!.patch?.portForwards.some((f) => f.forward.id === edited) ?? false, 'a patch with the edit');
      expect(messages.at(-1)!.patch).toMatchObject({
        portForwards: [{ instanceId: vm, forward: { id: edited, targetPorts: { start: 8080 } } }],
        removedPortForwards: [],
      });
      await api.admin(`mutation($id: ID!) { deletePortForward(input: { portForwardId: $id }) { __typename } }`, { id: deleted });
      await until(() => messages.at(-1)!.patch?.removedPortForwards.includes(deleted) ?? false, 'a patch removing the deleted forward');
      expect(messages.at(-1)!.patch).toMatchObject({ portForwards: [], removedPortForwards: [deleted], removedInstances: [] });
      // an instance deleted with its forward (deleted by the service, not by deletePortForward): the instance goes, its forward with it
      await api.admin(`mutation($id: ID!) { deleteInstance(input: { instanceId: $id }) { __typename ${ERROR_FIELDS} } }`, { id: doomedVm });
      await until(() => messages.at(-1)!.patch?.removedInstances.includes(doomedVm) ?? false, 'a patch removing the instance');
      expect(messages.at(-1)!.patch).toMatchObject({ removedInstances: [doomedVm], removedPortForwards: [] });
      // each patch read only what changed: one compile of the changed forwards per message, never the whole state again
      expect(compile.mock.calls.length).toBe(messages.length - seen);
    } finally {
      compile.mockRestore();
    }
    let state = messages[0]!.full!;
    for (const m of messages.slice(1)) state = applyDesiredStatePatch(state, m.patch).state;
    const now = (await api.admin(`query($h: ID!) { hostDesiredState(hostId: $h) { document } }`, { h: tombHost })).data!.hostDesiredState
      .document as DesiredState;
    expect(state).toEqual(now);
    expect(state.instances.flatMap((i) => i.portForwards.map((f) => f.id)).sort()).toEqual([edited, kept].sort());
  });

  it('after half an hour without a message compares the whole state with the one sent, and its patch rebuilds the revision exactly', async () => {
    const idleHost = await createHost(api.admin, 'idle-host');
    const client = createClient({
      url: controller.url.replace('http://', 'ws://'),
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      connectionParams: { Authorization: `Bearer ${await agentToken(idleHost)}` },
    });
    clients.push(client);
    const messages: { revision: number; full: DesiredState | null; patch: DesiredStatePatch | null }[] = [];
    client.subscribe<{ hostDesiredStateChanges: (typeof messages)[number] }>(
      { query: 'subscription($h: ID!) { hostDesiredStateChanges(hostId: $h) { revision full patch } }', variables: { h: idleHost } },
      { next: (m) => void (m.data && messages.push(m.data.hostDesiredStateChanges)), error: () => {}, complete: () => {} },
    );
    await until(() => messages.length === 1, 'the full document');
    const vm = (
      await api.admin(
        `mutation($h: ID!) { createInstance(input: { hostId: $h, name: "idle-vm", nics: [{ network: "br-ws" }] }) { ... on CreateInstancePayload { instance { id } } } }`,
        { h: idleHost },
      )
    ).data!.createInstance.instance.id as string;
    const forward = async (port: number) =>
      (
        await api.admin(
          `mutation($i: ID!, $p: String!) { createPortForward(input: { instanceId: $i, protocol: TCP, hostPort: $p, targetPort: "80" }) { ... on CreatePortForwardPayload { portForward { id } } } }`,
          { i: vm, p: String(port) },
        )
      ).data!.createPortForward.portForward.id as string;
    const [edited, deleted, kept] = [await forward(26001), await forward(26002), await forward(26003)];
    await until(() => messages.at(-1)!.patch?.portForwards.some((f) => f.forward.id === kept) ?? false, 'the third forward');
    // 31 minutes on: the tombstones are no longer trusted, the stream reads the whole state and diffs
    const later = Date.now() + 31 * 60_000;
    const clock = vi.spyOn(Date, 'now').mockImplementation(() => later);
    const compile = vi.spyOn(
      DesiredStateService.prototype as unknown as { compile: (tx: unknown, hostId: string, filter: unknown) => Promise<DesiredState> },
      'compile',
    );
    try {
      const seen = messages.length;
      await api.admin(`mutation($id: ID!) { updatePortForward(input: { portForwardId: $id, targetPort: "8080" }) { __typename } }`, { id: edited });
      await until(() => messages.length > seen, 'the patch after the pause');
      expect(messages.at(-1)!.patch).toMatchObject({
        portForwards: [{ instanceId: vm, forward: { id: edited, targetPorts: { start: 8080 } } }],
        removedPortForwards: [],
      });
      // one read, of the whole state (all three forwards), not of the changed one alone
      expect(compile.mock.calls.length).toBe(1);
      const read = await (compile.mock.results[0]!.value as Promise<DesiredState>);
      expect(read.instances.flatMap((i) => i.portForwards)).toHaveLength(3);
    } finally {
      clock.mockRestore();
      compile.mockRestore();
    }
    await api.admin(`mutation($id: ID!) { deletePortForward(input: { portForwardId: $id }) { __typename } }`, { id: deleted });
    await until(() => messages.at(-1)!.patch?.removedPortForwards.includes(deleted) ?? false, 'a patch removing the deleted forward');
    let state = messages[0]!.full!;
    for (const m of messages.slice(1)) state = applyDesiredStatePatch(state, m.patch).state;
    const now = (await api.admin(`query($h: ID!) { hostDesiredState(hostId: $h) { document } }`, { h: idleHost })).data!.hostDesiredState
      .document as DesiredState;
    expect(state).toEqual(now);
    expect(state.instances.flatMap((i) => i.portForwards.map((f) => f.id)).sort()).toEqual([edited, kept].sort());
  });

  it("refuses another host's agent and user tokens", async () => {
    const wrong = subscribe(await agentToken(otherHostId), hostId);
    await until(() => wrong.errors.length > 0, 'an error for the wrong host');
    expect(JSON.stringify(wrong.errors)).toContain('FORBIDDEN');
    expect(wrong.received).toEqual([]);
    const user = await api.tenant('nosy');
    const byUser = subscribe(user.secret, hostId);
    await until(() => byUser.errors.length > 0, 'an error for a user token');
    expect(byUser.received).toEqual([]);
  });

  it("records agent status reports and streams each owner only their own objects' changes", async () => {
    const owner = await api.tenant('sophie');
    const mk = async (name: string, ownerId?: string) =>
      (
        await api.admin(
          `mutation($h: ID!, $n: String!, $o: ID) { createInstance(input: { hostId: $h, name: $n, ownerId: $o, nics: [{ network: "br-ws" }] }) { ... on CreateInstancePayload { instance { id } } } }`,
          { h: hostId, n: name, o: ownerId },
        )
      ).data!.createInstance.instance.id as string;
    const forward = async (instanceId: string, port: string) =>
      (
        await api.admin(
          `mutation($i: ID!, $p: String!) { createPortForward(input: { instanceId: $i, protocol: TCP, hostPort: $p, targetPort: "22" }) { ... on CreatePortForwardPayload { portForward { id } } } }`,
          { i: instanceId, p: port },
        )
      ).data!.createPortForward.portForward.id as string;
    const hers = await forward(await mk('sophie-vm', owner.id), '20022');
    const theirs = await forward(await mk('admin-vm'), '20023');

    const client = createClient({
      url: controller.url.replace('http://', 'ws://'),
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      connectionParams: { Authorization: `Bearer ${owner.secret}` },
    });
    clients.push(client);
    const seen: { objectId: string; status: string; error: string | null }[] = [];
    client.subscribe<{ objectStatusChanged: { objectId: string; status: string; error: string | null } }>(
      { query: 'subscription { objectStatusChanged { objectId status error } }' },
      { next: (m) => m.data && seen.push(m.data.objectStatusChanged), error: () => {}, complete: () => {} },
    );
    await new Promise((r) => setTimeout(r, 300));

    const agent = await agentToken(hostId);
    const revision = (await api.admin(STATE, { h: hostId })).data!.hostDesiredState.revision;
    const REPORT = `mutation($input: ReportObjectStatusInput!) { reportObjectStatus(input: $input) { __typename ... on ReportObjectStatusPayload { reported { changes { objectId status } } } ${ERROR_FIELDS} } }`;
    const send = (secret: string, input: Record<string, unknown>) => api.clientFor(secret)(REPORT, { input });
    const ok = await send(agent, {
      hostId,
      revision,
      objects: [
        { objectType: 'PORT_FORWARD', objectId: hers, status: 'FAILED', error: 'nft: Could not process rule' },
        { objectType: 'PORT_FORWARD', objectId: theirs, status: 'APPLIED' },
      ],
    });
    expect(ok.data!.reportObjectStatus.reported.changes).toHaveLength(2);
    await until(() => seen.length >= 1, 'the owner sees the change');
    await new Promise((r) => setTimeout(r, 200));
    expect(seen).toEqual([{ objectId: hers, status: 'FAILED', error: 'nft: Could not process rule' }]);
    const status = await owner.client(`query($id: ID!) { portForward(id: $id) { status statusError } }`, { id: hers });
    expect(status.data!.portForward).toEqual({ status: 'FAILED', statusError: 'nft: Could not process rule' });

    expect((await send(owner.secret, { hostId, revision, objects: [] })).data!.reportObjectStatus).toMatchObject({ code: 'FORBIDDEN', field: 'input.hostId' });
    expect((await send(await agentToken(otherHostId), { hostId, revision, objects: [] })).data!.reportObjectStatus).toMatchObject({ code: 'FORBIDDEN' });
    expect((await send(agent, { hostId, revision: revision + 5, objects: [] })).data!.reportObjectStatus).toMatchObject({
      code: 'VALIDATION_FAILED',
      field: 'input.revision',
    });
    expect(
      (await send(agent, { hostId, revision, objects: [{ objectType: 'PORT_FORWARD', objectId: hers, status: 'APPLIED', error: 'x' }] })).data!
        .reportObjectStatus,
    ).toMatchObject({
      code: 'VALIDATION_FAILED',
      field: 'input.objects[0].error',
    });
  });
});
