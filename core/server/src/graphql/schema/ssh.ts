/** SSH through the controller: users' public keys for the jump server, and the tunnel requests host agents serve. */
import type { TunnelRequest } from '@gatehouse/agent-protocol';
import type { SshSession } from '../../services/ssh-access-service.js';
import type { SshKey } from '../../services/ssh-key-service.js';
import type { InstanceSshHostKey, TerminalTicket } from '../../services/terminal-service.js';
import type { TerminalRecording } from '../../services/terminal-recording-service.js';
import { InstanceRef } from './instances.js';
import { ConflictError, ForbiddenError, NotFoundError, ValidationError } from '../../support/errors.js';
import { builder } from '../builder.js';
import { requireActor } from '../context.js';
import { resultOf } from './mutation-result.js';
import { UserRef } from './users.js';

const SshKeyRef = builder.objectRef<SshKey>('SshKey').implement({
  description: "A public key the controller's SSH jump server accepts for its user (`ssh -J gatehouse@controller:2222 root@vm1`).",
  fields: (t) => ({
    id: t.exposeID('id', { description: 'The key id (for removeSshKey).' }),
    name: t.exposeString('name', { description: "A label: the key's comment unless one was given." }),
    algorithm: t.exposeString('algorithm', { description: 'The key type, e.g. "ssh-ed25519".' }),
    publicKey: t.exposeString('publicKey', { description: 'The key as in authorized_keys, without its comment.' }),
    fingerprint: t.exposeString('fingerprint', { description: 'SHA256 fingerprint as `ssh-keygen -l` prints it.' }),
    lastUsedAt: t.expose('lastUsedAt', { type: 'DateTime', nullable: true, description: 'Last authentication with it on the jump server.' }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When the key was added.' }),
  }),
});

builder.objectField(UserRef, 'sshKeys', (t) =>
  t.field({
    type: [SshKeyRef],
    description: "The user's SSH public keys (the user themself, or an admin).",
    resolve: (user, _a, ctx) => ctx.services.sshKeys.keysOfUser(requireActor(ctx), user.id),
  }),
);

const SshSessionRef = builder.objectRef<SshSession>('SshSession').implement({
  description: 'One connection through the SSH jump server to an instance.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'The session id.' }),
    keyFingerprint: t.exposeString('keyFingerprint', {
      description: 'The key the user authenticated with, or "web-terminal" for a session of the web terminal (`openTerminal`).',
    }),
    instanceId: t.exposeID('instanceId', { nullable: true, description: 'Null once the instance is deleted.' }),
    targetAddress: t.exposeString('targetAddress', { description: 'The instance address the session went to, e.g. "10.0.0.5".' }),
    targetPort: t.exposeInt('targetPort', { description: 'The instance port, 22 unless its host allows more.' }),
    sourceAddress: t.exposeString('sourceAddress', { description: "The SSH client's address:port." }),
    startedAt: t.expose('startedAt', { type: 'DateTime', description: 'When the jump server opened the stream.' }),
    endedAt: t.expose('endedAt', { type: 'DateTime', nullable: true, description: 'Null while it lasts.' }),
    bytesToInstance: t.exposeFloat('bytesToInstance', { description: 'Bytes from the client to the instance (recorded at the end).' }),
    bytesFromInstance: t.exposeFloat('bytesFromInstance', { description: 'Bytes from the instance to the client (recorded at the end).' }),
    endReason: t.exposeString('endReason', {
      nullable: true,
      description: 'Why it ended (client closed, instance closed, agent gone, idle); null while it lasts.',
    }),
  }),
});

builder.objectField(UserRef, 'sshSessions', (t) =>
  t.field({
    type: [SshSessionRef],
    description: "The user's newest sessions through the SSH jump server, newest first (the user themself, or an admin).",
    args: { last: t.arg.int({ defaultValue: 50, description: '1-500.' }) },
    resolve: (user, args, ctx) => ctx.services.sshAccess.sessionsOf(requireActor(ctx), user.id, args.last ?? 50),
  }),
);

const AddSshKeyInput = builder.inputType('AddSshKeyInput', {
  description: 'A public key for the caller.',
  fields: (t) => ({
    publicKey: t.string({
      required: true,
      description: 'One public key line (`ssh-ed25519 AAAA… comment`, as in a .pub file): ed25519, ECDSA, or RSA of at least 2048 bits.',
    }),
    name: t.string({ description: "1-64 characters. Default: the key's comment." }),
  }),
});

const RemoveSshKeyInput = builder.inputType('RemoveSshKeyInput', {
  description: "Which of the caller's keys to remove.",
  fields: (t) => ({ keyId: t.id({ required: true, description: "SshKey.id of one of the caller's keys." }) }),
});

builder.mutationFields((t) => ({
  addSshKey: t.field({
    type: SshKeyRef,
    description: "Adds a public key for the caller: the jump server then accepts it for `direct-tcpip` to the caller's instances. A key belongs to one user.",
    args: { input: t.arg({ type: AddSshKeyInput, required: true, description: 'The key line and an optional name.' }) },
    errors: resultOf('AddSshKey', 'sshKey', [ValidationError, ConflictError]),
    resolve: (_r, { input }, ctx) => ctx.services.sshKeys.add(requireActor(ctx), input),
  }),
  removeSshKey: t.field({
    type: SshKeyRef,
    description: "Removes one of the caller's public keys; the jump server refuses it from the next authentication on.",
    args: { input: t.arg({ type: RemoveSshKeyInput, required: true, description: 'The key to remove.' }) },
    errors: resultOf('RemoveSshKey', 'sshKey', [ValidationError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.sshKeys.remove(requireActor(ctx), input.keyId),
  }),
}));

const TunnelRequestRef = builder.objectRef<TunnelRequest>('TunnelRequest').implement({
  description: "A stream the controller asks a host's agent for: connect to address:port, then dial back to /agent-stream with the ticket.",
  fields: (t) => ({
    ticket: t.exposeString('ticket', { description: 'One-time and short-lived: good for this stream only.' }),
    address: t.exposeString('address', { description: 'An address of an instance on the host.' }),
    port: t.exposeInt('port', { description: 'The target port on that address, one the agent allows.' }),
  }),
});

builder.subscriptionField('hostTunnelRequests', (t) =>
  t.field({
    type: TunnelRequestRef,
    description:
      "For host agents (the host's AGENT token): the tunnel streams the controller wants (SSH through the controller). `ports`: the target ports this agent allows; the controller asks for no others.",
    args: {
      hostId: t.arg.id({ required: true, description: "The agent's own host (its token's)." }),
      ports: t.arg.intList({ required: true, description: '1 to 64 ports.' }),
    },
    subscribe: (_r, args, ctx) => ctx.services.tunnels.requests(requireActor(ctx, { allowAgent: true }), String(args.hostId), args.ports),
    resolve: (request) => request,
  }),
);

const InstanceSshHostKeyRef = builder.objectRef<InstanceSshHostKey>('InstanceSshHostKey').implement({
  description:
    'An SSH host key of an instance, as the web terminal learned it on first use. A different key later is refused (as `ssh` does) until it is forgotten with forgetInstanceSshHostKeys.',
  fields: (t) => ({
    algorithm: t.exposeString('algorithm', { description: 'The key type, e.g. "ssh-ed25519".' }),
    publicKey: t.exposeString('publicKey', { description: 'The key as in known_hosts: "type base64".' }),
    fingerprint: t.exposeString('fingerprint', { description: "SHA256 fingerprint as `ssh-keygen -l` prints it: compare it with the instance console's." }),
    learnedAt: t.expose('createdAt', { type: 'DateTime', description: 'When the web terminal first saw it.' }),
  }),
});

builder.objectField(InstanceRef, 'sshHostKeys', (t) =>
  t.field({
    type: [InstanceSshHostKeyRef],
    description: "The instance's SSH host keys the web terminal learned on first use (empty until its first terminal).",
    resolve: (instance, _a, ctx) => ctx.services.terminals.hostKeysOf(requireActor(ctx), instance),
  }),
);

const TerminalTicketRef = builder.objectRef<TerminalTicket>('TerminalTicket').implement({
  description:
    'A ticket for one web terminal: open a WebSocket to /terminal on the controller and send {"type":"auth","ticket":…,"cols":…,"rows":…} as its first message. Good once, for a minute.',
  fields: (t) => ({
    ticket: t.exposeString('ticket', { description: 'The secret for the first WebSocket message; never put it in a URL.' }),
    expiresAt: t.expose('expiresAt', { type: 'DateTime', description: 'After this the ticket is refused.' }),
    instanceId: t.exposeID('instanceId', { description: 'The instance the terminal connects to.' }),
    username: t.exposeString('username', { description: 'The login name on the instance.' }),
    path: t.string({ description: 'The WebSocket path on the controller: "/terminal".', resolve: () => '/terminal' }),
  }),
});

const OpenTerminalInput = builder.inputType('OpenTerminalInput', {
  description: 'Which instance, as which login.',
  fields: (t) => ({
    instanceId: t.id({ required: true, description: 'One of your instances (any, for an admin).' }),
    username: t.string({ required: true, description: 'The login name on the instance, e.g. "root": 1-32 letters, digits, "_", "." or "-".' }),
  }),
});

const ForgetInstanceSshHostKeysInput = builder.inputType('ForgetInstanceSshHostKeysInput', {
  description: 'The instance whose learned host keys to forget.',
  fields: (t) => ({ instanceId: t.id({ required: true, description: 'One of your instances (any, for an admin).' }) }),
});

builder.mutationFields((t) => ({
  openTerminal: t.field({
    type: TerminalTicketRef,
    description:
      "A ticket for a web terminal to one of your instances: the controller runs OpenSSH through its own jump server and the host's agent, so the instance needs no public address. You log in to the instance as in any terminal (password prompt).",
    args: { input: t.arg({ type: OpenTerminalInput, required: true, description: 'The instance and the login name.' }) },
    errors: resultOf('OpenTerminal', 'terminal', [ValidationError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.terminals.open(requireActor(ctx), String(input.instanceId), input.username),
  }),
  forgetInstanceSshHostKeys: t.field({
    type: [InstanceSshHostKeyRef],
    description: "Forgets the instance's learned SSH host keys (after it was reinstalled): its next web terminal learns them again.",
    args: { input: t.arg({ type: ForgetInstanceSshHostKeysInput, required: true, description: 'The instance.' }) },
    errors: resultOf('ForgetInstanceSshHostKeys', 'forgotten', [ValidationError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.terminals.forgetHostKeys(requireActor(ctx), String(input.instanceId)),
  }),
}));

builder.objectField(UserRef, 'terminalRecording', (t) =>
  t.exposeBoolean('terminalRecording', {
    description: "Whether the user's web terminals are recorded (asciicast v2) on the controller; off unless an admin switched it on (setTerminalRecording).",
  }),
);

const TerminalRecordingRef = builder.objectRef<TerminalRecording>('TerminalRecording').implement({
  description:
    'A recorded web terminal session, an asciicast v2 file on the controller that ran it (play it with `asciinema play`). Made only for users an admin switched recording on for.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'The recording id (for the terminalRecording query).' }),
    instanceId: t.exposeID('instanceId', { description: 'The instance the terminal was connected to.' }),
    instanceName: t.exposeString('instanceName', { description: 'The instance name at the time of the session.' }),
    username: t.exposeString('username', { description: 'The login name on the instance.' }),
    startedAt: t.expose('startedAt', { type: 'DateTime', description: 'When the session started (to the second).' }),
    updatedAt: t.expose('updatedAt', { type: 'DateTime', description: 'The last write to the recording (its end, once the session is over).' }),
    bytes: t.exposeInt('bytes', { description: 'The size of the file; the controller stops a recording at its size cap (a final "m" event says so).' }),
    width: t.exposeInt('width', { description: 'Terminal columns at the start.' }),
    height: t.exposeInt('height', { description: 'Terminal rows at the start.' }),
    cast: t.string({
      description: 'The whole asciicast v2 text: a JSON header line, then one [seconds, "o" | "r" | "m", data] event a line.',
      resolve: (recording, _a, ctx) => ctx.services.terminalRecordings.content(requireActor(ctx), recording),
    }),
  }),
});

builder.objectField(UserRef, 'terminalRecordings', (t) =>
  t.field({
    type: [TerminalRecordingRef],
    description: "The user's recorded web terminal sessions on this controller, newest first (the user themself, or an admin; others see none).",
    args: { last: t.arg.int({ defaultValue: 50, description: '1-500.' }) },
    resolve: (user, args, ctx) => ctx.services.terminalRecordings.list(requireActor(ctx), user.id, args.last ?? 50),
  }),
);

builder.queryField('terminalRecording', (t) =>
  t.field({
    type: TerminalRecordingRef,
    nullable: true,
    description: 'One recorded web terminal session (its user, or an admin); null when there is none you may see on this controller.',
    args: { id: t.arg.id({ required: true, description: 'TerminalRecording.id.' }) },
    resolve: (_r, args, ctx) => ctx.services.terminalRecordings.get(requireActor(ctx), String(args.id)),
  }),
);

const SetTerminalRecordingInput = builder.inputType('SetTerminalRecordingInput', {
  description: "Whether a user's web terminals are recorded.",
  fields: (t) => ({
    userId: t.id({ required: true, description: 'The user.' }),
    enabled: t.boolean({ required: true, description: 'true: record their next web terminals (asciicast v2); false: record none.' }),
  }),
});

builder.mutationFields((t) => ({
  setTerminalRecording: t.field({
    type: UserRef,
    description:
      "Switches the recording of a user's web terminal sessions (admin only; audited). Sessions that start afterwards are recorded in asciicast v2 on the controller, up to its size cap per recording.",
    args: { input: t.arg({ type: SetTerminalRecordingInput, required: true, description: 'The user and the switch.' }) },
    errors: resultOf('SetTerminalRecording', 'user', [ValidationError, ForbiddenError, NotFoundError]),
    resolve: (_r, { input }, ctx) => ctx.services.terminalRecordings.setRecording(requireActor(ctx), { userId: String(input.userId), enabled: input.enabled }),
  }),
}));
