/**
 * `diagnosePortForward` through the API and the agent protocol, with an agent played over a real
 * graphql-ws socket (the host's AGENT token): the request reaches the agent holding
 * `hostDiagnosisRequests`, its answer comes back as the mutation's result; an agent that answers
 * with an error, an agent online without the subscription (an older version) and no agent at all
 * each get a clear typed error; answers are checked (a foreign request id, a bad verdict, another
 * host's token). The verdicts themselves are the driver's: plugins/linux/test/diagnose.test.ts.
 */
import { DIAGNOSIS_REQUESTS_SUBSCRIPTION, REPORT_DIAGNOSIS_MUTATION, type DiagnosisRequest } from '@gatehouse/agent-protocol';
import type { Client as WsClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startController, type Controller } from '../src/server.js';
import { ERROR_FIELDS, createTestApi, type TestApi } from '../src/testing/api.js';
import { createHost, createPool } from '../src/testing/fixtures.js';
import { storeBackends } from '../src/testing/stores.js';
import { connectWs } from './support/ws.js';

const backends = (await storeBackends()).filter((b) => b.name === 'pglite');

const DIAGNOSE = `mutation($input: DiagnosePortForwardInput!) { diagnosePortForward(input: $input) { __typename ... on DiagnosePortForwardPayload { diagnosis { portForwardId verdict diagnosedAt findings { check severity verdict detail rule objectId packets } } } ${ERROR_FIELDS} } }`;
const REPORT = REPORT_DIAGNOSIS_MUTATION.replace('... on Error { message }', `... on Error { message } ${ERROR_FIELDS}`);

describe.each(backends)('forward diagnosis through the agent protocol on $name', (backend) => {
  let controller: Controller;
  let api: TestApi;
  let cleanup: () => Promise<void>;
  const clients: WsClient[] = [];
  let hostId: string;
  let forwardId: string;
  let agentSecret: string;

  const ws = (secret: string) => connectWs(controller.url, secret, clients);
  /** An agent: its desired-state subscription (online), and optionally the diagnosis one answered by `answer`. */
  const agent = async (answer?: (request: DiagnosisRequest) => Record<string, unknown>) => {
    const client = ws(agentSecret);
    const requests: DiagnosisRequest[] = [];
    // the diagnosis subscription first: once the agent shows online, the socket has taken both
    if (answer) {
      client.subscribe<{ hostDiagnosisRequests: DiagnosisRequest }>(
        { query: DIAGNOSIS_REQUESTS_SUBSCRIPTION, variables: { hostId } },
        {
          next: (m) => {
            const request = m.data!.hostDiagnosisRequests;
            requests.push(request);
            void api.clientFor(agentSecret)(REPORT, { input: { hostId, requestId: request.requestId, ...answer(request) } });
          },
          error() {},
          complete() {},
        },
      );
    }
    client.subscribe(
      { query: 'subscription($h: ID!) { hostDesiredState(hostId: $h) { revision } }', variables: { h: hostId } },
      { next() {}, error() {}, complete() {} },
    );
    await online(true);
    return { client, requests };
  };
  const online = async (want: boolean) => {
    for (let i = 0; i < 200; i++) {
      const r = await api.admin('query($h: ID!) { host(id: $h) { agent { online } } }', { h: hostId });
      if (r.data!.host.agent.online === want) return;
      await new Promise((res) => setTimeout(res, 50));
    }
    throw new Error(`agent never ${want ? 'online' : 'offline'}`);
  };

  beforeAll(async () => {
    const opened = await backend.open();
    cleanup = opened.cleanup;
    controller = await startController({
      store: opened.config,
      port: 0,
      bootstrap: false,
      logger: { info() {}, warn() {}, error() {} },
      agentPresence: { heartbeatMs: 250, offlineAfterMs: 2000 },
    });
    api = await createTestApi(controller.store, controller.container);
    hostId = await createHost(api.admin, 'diag-host');
    await createPool(api.admin, { name: 'diag', kind: 'PRIVATE', network: 'br-diag', cidr: '10.30.0.0/24' });
    const vm = await api.admin(
      `mutation($h: ID!) { createInstance(input: { hostId: $h, name: "vm-diag", nics: [{ network: "br-diag", addresses: ["10.30.0.5"] }] }) { ... on CreateInstancePayload { instance { id } } } }`,
      { h: hostId },
    );
    const f = await api.admin(
      `mutation($i: ID!) { createPortForward(input: { instanceId: $i, protocol: TCP, hostPort: "2222", targetPort: "22" }) { ... on CreatePortForwardPayload { portForward { id } } } }`,
      {
        i: vm.data!.createInstance.instance.id,
      },
    );
    forwardId = f.data!.createPortForward.portForward.id;
    const me = (await api.admin('{ me { id } }')).data!.me.id;
    const t = await api.admin(
      `mutation($u: ID!, $h: ID!) { createApiToken(input: { userId: $u, name: "agent", scope: AGENT, hostId: $h }) { ... on CreateApiTokenPayload { created { secret } } } }`,
      { u: me, h: hostId },
    );
    agentSecret = t.data!.createApiToken.created.secret;
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.dispose()));
    await controller?.close();
    await cleanup?.();
  });

  it('answers CONFLICT while the host has no agent connected', async () => {
    const r = (await api.admin(DIAGNOSE, { input: { portForwardId: forwardId } })).data!.diagnosePortForward;
    expect(r).toMatchObject({ __typename: 'ConflictError', code: 'CONFLICT', field: 'input.portForwardId' });
    expect(r.message).toContain("its host's agent is not connected");
  });

  it('answers CAPABILITY_NOT_SUPPORTED when the agent is online but of a version without diagnosis', async () => {
    const old = await agent();
    const r = (await api.admin(DIAGNOSE, { input: { portForwardId: forwardId } })).data!.diagnosePortForward;
    expect(r).toMatchObject({ __typename: 'CapabilityNotSupportedError', code: 'CAPABILITY_NOT_SUPPORTED', field: 'input.portForwardId' });
    expect(r.message).toContain('does not take diagnosis requests: upgrade it');
    await old.client.dispose();
    await online(false);
  });

  it("hands the request to the agent and its diagnosis back to the caller, with the client's source address", async () => {
    const findings = [
      { check: 'instance', severity: 'PASS', verdict: 'OK', detail: 'instance "vm-diag" runs' },
      {
        check: 'firewall',
        severity: 'FAULT',
        verdict: 'FIREWALL_DROP',
        detail: 'rule r1 drops tcp port 22',
        rule: 'inet gatehouse fw_in_x #1',
        objectId: 'r1',
        packets: 7,
      },
    ];
    const a = await agent(() => ({ verdict: 'FIREWALL_DROP', findings }));
    const r = (await api.admin(DIAGNOSE, { input: { portForwardId: forwardId, sourceAddress: '198.51.100.7' } })).data!.diagnosePortForward;
    expect(r.__typename).toBe('DiagnosePortForwardPayload');
    expect(r.diagnosis).toMatchObject({
      portForwardId: forwardId,
      verdict: 'FIREWALL_DROP',
      findings: [
        { check: 'instance', severity: 'PASS', verdict: 'OK', rule: null, objectId: null, packets: null },
        { check: 'firewall', severity: 'FAULT', verdict: 'FIREWALL_DROP', rule: 'inet gatehouse fw_in_x #1', objectId: 'r1', packets: 7 },
      ],
    });
    expect(a.requests).toEqual([{ requestId: expect.stringMatching(/^[0-9a-f]{32}$/), portForwardId: forwardId, sourceAddress: '198.51.100.7' }]);
    // a request id is good once: answering it again is NOT_FOUND
    const again = (await api.clientFor(agentSecret)(REPORT, { input: { hostId, requestId: a.requests[0]!.requestId, verdict: 'OK', findings: [] } })).data!
      .reportPortForwardDiagnosis;
    expect(again).toMatchObject({ code: 'NOT_FOUND', field: 'input.requestId' });
    await a.client.dispose();
    await online(false);
  });

  it("turns the agent's error into CAPABILITY_NOT_SUPPORTED naming it", async () => {
    const a = await agent(() => ({ error: 'the scripted driver cannot diagnose forwards' }));
    const r = (await api.admin(DIAGNOSE, { input: { portForwardId: forwardId } })).data!.diagnosePortForward;
    expect(r).toMatchObject({ __typename: 'CapabilityNotSupportedError', code: 'CAPABILITY_NOT_SUPPORTED' });
    expect(r.message).toContain('could not diagnose it: the scripted driver cannot diagnose forwards');
    await a.client.dispose();
    await online(false);
  });

  it('checks the input and the answers: a bad source address, a bad verdict, another token', async () => {
    const bad = (await api.admin(DIAGNOSE, { input: { portForwardId: forwardId, sourceAddress: '300.1.1.1' } })).data!.diagnosePortForward;
    expect(bad).toMatchObject({ code: 'VALIDATION_FAILED', field: 'input.sourceAddress' });
    const forbidden = (await api.admin(REPORT, { input: { hostId, requestId: 'x', verdict: 'OK' } })).data!.reportPortForwardDiagnosis;
    expect(forbidden).toMatchObject({ code: 'FORBIDDEN', field: 'input.hostId' });
    // a bad answer is refused and the caller still waits for a good one
    const a = await agent(() => ({ verdict: 'OK', findings: [{ check: 'x', severity: 'PASS', verdict: 'OK', detail: 'd', packets: -1 }] }));
    const pending = api.admin(DIAGNOSE, { input: { portForwardId: forwardId } });
    while (a.requests.length === 0) await new Promise((res) => setTimeout(res, 20));
    const refused = (
      await api.clientFor(agentSecret)(REPORT, {
        input: {
          hostId,
          requestId: a.requests[0]!.requestId,
          verdict: 'OK',
          findings: [{ check: 'x', severity: 'PASS', verdict: 'OK', detail: 'd', packets: -1 }],
        },
      })
    ).data!.reportPortForwardDiagnosis;
    expect(refused).toMatchObject({ code: 'VALIDATION_FAILED', field: 'input.findings[0].packets' });
    await api.clientFor(agentSecret)(REPORT, { input: { hostId, requestId: a.requests[0]!.requestId, verdict: 'OK', findings: [] } });
    expect((await pending).data!.diagnosePortForward).toMatchObject({ diagnosis: { verdict: 'OK', findings: [] } });
    const unknown = (await api.clientFor(agentSecret)(REPORT, { input: { hostId, requestId: 'nope', verdict: 'OK' } })).data!.reportPortForwardDiagnosis;
    expect(unknown).toMatchObject({ code: 'NOT_FOUND', field: 'input.requestId' });
    await a.client.dispose();
  });
});
