/**
 * The SSH jump server without root: a controller in this process with its jump server on a free
 * port, and ssh2's client. What it refuses and how it says so: other users' instances (by name and
 * by address), an instance whose host has no agent connected, exec and shell, removed keys, and a
 * source address after too many failed authentications. The way through to a real sshd is tested
 * as root with OpenSSH in agents/host-agent/test/ssh-e2e.test.ts.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateEd25519KeyPair, startController, type Controller } from '@gatehouse/server';

const ERR = '... on Error { code message }';

/** Connects with a key; resolves the ready client or rejects with the client's error. */
function connect(port: number, privateKey: string): Promise<ssh2.Client> {
  return new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    client.once('ready', () => resolve(client));
    client.once('error', reject);
    client.once('close', () => reject(new Error('closed before authentication')));
    client.connect({ host: '127.0.0.1', port, username: 'gatehouse', privateKey, readyTimeout: 10_000 });
  });
}

/** Asks for a direct-tcpip channel; resolves with the refusal's message (or 'opened'). */
function forward(client: ssh2.Client, destination: string, port: number): Promise<string> {
  return new Promise((resolve) =>
    client.forwardOut('127.0.0.1', 0, destination, port, (err, channel) => {
      if (err) return resolve(err.message);
      channel.destroy();
      resolve('opened');
    }),
  );
}

describe('the SSH jump server', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-jump-'));
  let controller: Controller;
  let port: number;
  const keys = {
    alice: generateEd25519KeyPair(),
    bob: generateEd25519KeyPair(),
    stranger: generateEd25519KeyPair(),
  };
  const secrets: Record<string, string> = {};
  let aliceKeyId: string;
  let bobAddress: string;

  const api = async (query: string, variables: Record<string, unknown> = {}, secret = controller.bootstrapSecret!) => {
    const response = await fetch(controller.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${secret}` },
      body: JSON.stringify({ query, variables }),
    });
    return ((await response.json()) as { data: any }).data;
  };

  beforeAll(async () => {
    controller = await startController({ store: { kind: 'pglite' }, port: 0, ssh: { port: 0, hostKeyPath: join(dir, 'host_key'), maxAuthFailures: 3 } });
    port = controller.ssh!.port;
    await api(`mutation { createIpPool(input: { name: "p", kind: PRIVATE, network: "br", cidr: "10.66.0.0/24" }) { __typename ${ERR} } }`);
    const h = await api(`mutation { createHost(input: { name: "lab", backend: LINUX }) { ... on CreateHostPayload { host { id } } ${ERR} } }`);
    for (const name of ['alice', 'bob'] as const) {
      const u = await api(`mutation($n: String!) { createUser(input: { name: $n }) { ... on CreateUserPayload { user { id } } ${ERR} } }`, { n: name });
      const t = await api(
        `mutation($u: ID!) { createApiToken(input: { userId: $u, name: "t", scope: USER }) { ... on CreateApiTokenPayload { created { secret } } ${ERR} } }`,
        { u: u.createUser.user.id },
      );
      secrets[name] = t.createApiToken.created.secret;
      const added = await api(
        `mutation($k: String!) { addSshKey(input: { publicKey: $k }) { ... on AddSshKeyPayload { sshKey { id } } ${ERR} } }`,
        { k: keys[name].public },
        secrets[name],
      );
      if (name === 'alice') aliceKeyId = added.addSshKey.sshKey.id;
      const i = await api(
        `mutation($h: ID!, $o: ID!, $n: String!) { createInstance(input: { hostId: $h, ownerId: $o, name: $n, nics: [{ network: "br", allocate: [IPV4] }] }) { ... on CreateInstancePayload { instance { nics { addresses { address } } } } ${ERR} } }`,
        { h: h.createHost.host.id, o: u.createUser.user.id, n: name === 'alice' ? 'vm1' : 'bobvm' },
      );
      if (name === 'bob') bobAddress = i.createInstance.instance.nics[0].addresses[0].address;
    }
  });

  afterAll(async () => {
    await controller?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("keeps its host key across restarts and shows a user's keys on me", async () => {
    expect(controller.ssh!.fingerprint).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
    const again = await startController({ store: { kind: 'pglite' }, port: 0, ssh: { port: 0, hostKeyPath: join(dir, 'host_key') } });
    expect(again.ssh!.fingerprint).toBe(controller.ssh!.fingerprint);
    await again.close();
    const me = await api(`{ me { sshKeys { name algorithm fingerprint } } }`, {}, secrets.alice);
    expect(me.me.sshKeys).toEqual([{ name: 'ssh-ed25519', algorithm: 'ssh-ed25519', fingerprint: expect.stringMatching(/^SHA256:/) }]);
  });

  it("refuses another user's instance by name and by address, and an instance whose host has no agent", async () => {
    const client = await connect(port, keys.alice.private);
    try {
      expect(await forward(client, 'bobvm', 22)).toBe('(SSH) Channel open failure: bobvm is not one of your instances (by name, name.host or address)');
      expect(await forward(client, bobAddress, 22)).toContain(`${bobAddress} is not one of your instances`);
      expect(await forward(client, 'vm1.lab', 22)).toBe('(SSH) Channel open failure: the agent of host lab is not connected');
      expect(await forward(client, 'x'.repeat(1000), 22)).toContain('must be an instance name');
    } finally {
      client.end();
    }
  });

  it('runs no command and no shell', async () => {
    const client = await connect(port, keys.bob.private);
    const command = 'id';
    try {
      const result = await new Promise<{ code: number; stderr: string }>((resolve, reject) =>
        client.exec(command, (err, stream) => {
          if (err) return reject(err);
          let stderr = '';
          stream.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
          stream.on('exit', (code: number) => stream.on('close', () => resolve({ code, stderr })));
          stream.resume();
        }),
      );
      expect(result.code).toBe(1);
      expect(result.stderr).toContain('it opens no shell and runs no command');
      const forwarding = await new Promise<string>((resolve) => client.forwardIn('127.0.0.1', 0, (err) => resolve(err ? err.message : 'accepted')));
      expect(forwarding).not.toBe('accepted');
    } finally {
      client.end();
    }
  });

  it('refuses a removed key, then a source address after too many failures', async () => {
    const removed = await api(`mutation($k: ID!) { removeSshKey(input: { keyId: $k }) { __typename ${ERR} } }`, { k: aliceKeyId }, secrets.alice);
    expect(removed.removeSshKey.__typename).toBe('RemoveSshKeyPayload');
    await expect(connect(port, keys.alice.private)).rejects.toThrow(/All configured authentication methods failed/);
    await expect(connect(port, keys.stranger.private)).rejects.toThrow(/All configured authentication methods failed/);
    await expect(connect(port, keys.stranger.private)).rejects.toThrow(/All configured authentication methods failed|closed/);
    // three failures from 127.0.0.1: even a good key is now refused from there
    await expect(connect(port, keys.bob.private)).rejects.toThrow();
  });
});
