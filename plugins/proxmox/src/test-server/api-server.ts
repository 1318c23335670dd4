/**
 * A Proxmox VE API of our own for tests: HTTPS with a generated self-signed certificate, API
 * tokens with privileges, one or more nodes with QEMU VMs and LXC containers and their configs
 * (digests, pending changes), asynchronous tasks with UPIDs that finish after a delay. Every
 * request is checked against the official schema before it is served (see schema.ts): an unknown
 * path or method is a 501, bad parameters a 400 with PVE's body (`{"errors": {param: msg},
 * "data": null}`). Permission checks follow the schema's `permissions.check` and, for config
 * edits, the per-key privileges PVE checks (`VM.Config.Network` for `netN`, `SDN.Use` on the
 * bridge). A guest's NICs are made real by a `GuestBacking` (network namespaces in the lab).
 *
 * Faults for tests: slow tasks, failing tasks, 5xx answers, connection resets, a concurrent edit
 * before the next config change (digest mismatch), expired tokens, and the whole API going away.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { guestNics, type GuestNic } from '../property-string.js';
import { PveSchema, validateParams, type MethodSchema } from './schema.js';

/** A guest as the test server holds it. */
export interface Guest {
  vmid: number;
  type: 'qemu' | 'lxc';
  node: string;
  status: 'running' | 'stopped';
  /** The config as written (without pending changes). */
  config: Record<string, string>;
  /** Pending values (applied on the next start). */
  pending: Record<string, string>;
  /** Pending deletions. */
  pendingDelete: Set<string>;
}

/** An interface of a guest as its OS sees it (for LXC `interfaces` and the QEMU guest agent). */
export interface GuestInterface {
  name: string;
  mac: string;
  addresses: { address: string; prefix: number; family: 'ipv4' | 'ipv6' }[];
}

/** What makes a guest's NICs real (the lab's namespaces), or records them (unit tests). */
export interface GuestBacking {
  hasBridge(node: string, bridge: string): Promise<boolean>;
  /** Creates NIC `nic` of a running guest (host side `tap/veth<vmid>i<n>` on its bridge). */
  plug(guest: Guest, nic: GuestNic): Promise<void>;
  /** Removes a NIC of a running guest; succeeds when it is not there. */
  unplug(guest: Guest, index: number): Promise<void>;
  /** The guest's interfaces as seen inside it. */
  interfaces(guest: Guest): Promise<GuestInterface[]>;
  /** Everything of a guest that stopped or was destroyed. */
  stop(guest: Guest): Promise<void>;
}

/** A backing that only records (no namespaces): NICs exist while the guest runs; addresses are the config's. */
export class RecordingBacking implements GuestBacking {
  readonly plugged = new Set<string>();
  constructor(readonly bridges: ReadonlySet<string> = new Set(['vmbr0'])) {}
  async hasBridge(_node: string, bridge: string): Promise<boolean> {
    return this.bridges.has(bridge);
  }
  async plug(guest: Guest, nic: GuestNic): Promise<void> {
    this.plugged.add(`${guest.vmid}:${nic.index}`);
  }
  async unplug(guest: Guest, index: number): Promise<void> {
    this.plugged.delete(`${guest.vmid}:${index}`);
  }
  async interfaces(guest: Guest): Promise<GuestInterface[]> {
    return guestNics(guest.type, guest.config)
      .filter((n) => this.plugged.has(`${guest.vmid}:${n.index}`))
      .map((n) => ({
        name: n.name ?? `eth${n.index}`,
        mac: n.mac,
        addresses: n.addresses.map((a) => {
          const [address, prefix] = a.split('/');
          return { address: address!, prefix: Number(prefix), family: address!.includes(':') ? ('ipv6' as const) : ('ipv4' as const) };
        }),
      }));
  }
  async stop(guest: Guest): Promise<void> {
    for (const key of [...this.plugged]) if (key.startsWith(`${guest.vmid}:`)) this.plugged.delete(key);
  }
}

/** An API token and what it may do. */
export interface TestToken {
  secret: string;
  /** Privileges granted everywhere ('*': all). */
  privileges: Set<string> | '*';
  expired?: boolean;
}

/** The faults the next requests meet (counts go down as they are used). */
export interface PveFaults {
  /** How long a task runs before it stops (ms). */
  taskDelayMs: number;
  /** The next n asynchronous config tasks fail as a failed hot-plug (`netN: hotplug problem - …`), their change left pending. */
  failTasks: number;
  /** The next n requests are answered 500. */
  serverErrors: number;
  /** The next n requests lose their connection without an answer. */
  resets: number;
  /** Before the next n config edits, someone else edits the same config (their digest no longer matches). */
  digestConflicts: number;
  /** Called on every request before it is served; may stop the server ('unreachable') or reset this one. */
  onRequest?: (method: string, path: string) => 'reset' | 'unreachable' | undefined;
}

interface Task {
  upid: string;
  node: string;
  type: string;
  id: string;
  user: string;
  starttime: number;
  status: 'running' | 'stopped';
  exitstatus?: string;
}

/** An HTTP error with PVE's status, reason and optional per-parameter errors. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly errors?: Record<string, string>,
  ) {
    super(message);
  }
}

const DEFAULT_HOTPLUG = 'network,disk,usb';

/** The keys a config edit changes, with the privilege PVE checks for each (besides the schema's). */
function keyPrivilege(key: string): string {
  if (/^net\d+$/.test(key)) return 'VM.Config.Network';
  if (/^ipconfig\d+$/.test(key)) return 'VM.Config.Cloudinit';
  return 'VM.Config.Options';
}

/** The test server. */
export class PveTestServer {
  readonly guests = new Map<number, Guest>();
  readonly tokens = new Map<string, TestToken>();
  readonly nodes: string[];
  readonly faults: PveFaults = { taskDelayMs: 50, failTasks: 0, serverErrors: 0, resets: 0, digestConflicts: 0 };
  /** Every request served or refused, `METHOD /path status`, for tests that check what the plugin did. */
  readonly log: string[] = [];
  private readonly tasks = new Map<string, Task>();
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private cert = { key: '', cert: '' };
  private dir = '';
  private taskCounter = 0;
  port = 0;
  /** The certificate's SHA-256 fingerprint (`AA:BB:…`), for the plugin's `fingerprint`. */
  fingerprint = '';
  /** A PEM file of the certificate (it is its own CA), for the plugin's `caFile`. */
  caFile = '';

  constructor(
    readonly schema: PveSchema,
    readonly backing: GuestBacking,
    options: { nodes?: string[] } = {},
  ) {
    this.nodes = options.nodes ?? ['pve1'];
  }

  /** The API's origin, for the plugin's `url`. */
  get url(): string {
    return `https://127.0.0.1:${this.port}`;
  }

  /** Generates the certificate (openssl) and listens on 127.0.0.1 (a free port, or the last one after `stop`). */
  async start(): Promise<void> {
    if (!this.cert.cert) await this.makeCertificate();
    const server = createServer({ key: this.cert.key, cert: this.cert.cert }, (req, res) => void this.handle(req, res));
    server.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.port = (server.address() as { port: number }).port;
    this.server = server;
  }

  /** Stops listening and drops every connection: PVE unreachable until `start` again. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const socket of this.sockets) socket.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Stops and removes the certificate files. */
  async close(): Promise<void> {
    await this.stop();
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }

  /** Adds a token `user@realm!name` with privileges ('*' for all). */
  addToken(tokenId: string, secret: string, privileges: string[] | '*'): void {
    this.tokens.set(tokenId, { secret, privileges: privileges === '*' ? '*' : new Set(privileges) });
  }

  /** Adds a guest as an admin would have made it (running: its NICs are plugged). */
  async addGuest(guest: Omit<Guest, 'pending' | 'pendingDelete'>): Promise<Guest> {
    if (this.guests.has(guest.vmid)) throw new Error(`guest ${guest.vmid} exists`);
    const g: Guest = { ...guest, config: { ...guest.config }, pending: {}, pendingDelete: new Set() };
    this.guests.set(g.vmid, g);
    if (g.status === 'running') for (const nic of guestNics(g.type, g.config)) await this.backing.plug(g, nic);
    return g;
  }

  /** Deletes a guest behind everyone's back (its NICs go with it). */
  async destroyGuest(vmid: number): Promise<void> {
    const g = this.guests.get(vmid);
    if (!g) return;
    this.guests.delete(vmid);
    await this.backing.stop(g);
  }

  /** The digest PVE would give this config: SHA-1 of its serialisation. */
  digest(guest: Guest): string {
    const lines = Object.keys(guest.config)
      .sort()
      .map((k) => `${k}: ${guest.config[k]}`);
    for (const k of Object.keys(guest.pending).sort()) lines.push(`[pending] ${k}: ${guest.pending[k]}`);
    for (const k of [...guest.pendingDelete].sort()) lines.push(`[pending] delete: ${k}`);
    return createHash('sha1').update(lines.join('\n')).digest('hex');
  }

  private async makeCertificate(): Promise<void> {
    this.dir = await mkdtemp(join(tmpdir(), 'gatehouse-pve-'));
    const key = join(this.dir, 'pve-ssl.key');
    const cert = join(this.dir, 'pve-ssl.pem');
    await new Promise<void>((resolve, reject) =>
      execFile(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'ec',
          '-pkeyopt',
          'ec_paramgen_curve:prime256v1',
          '-nodes',
          '-days',
          '2',
          '-subj',
          `/CN=${this.nodes[0]}`,
          '-addext',
          'subjectAltName=IP:127.0.0.1,DNS:localhost',
          '-keyout',
          key,
          '-out',
          cert,
        ],
        (err, _stdout, stderr) => (err ? reject(new Error(`openssl req: ${stderr || err.message}`)) : resolve()),
      ),
    );
    this.cert = { key: await readFile(key, 'utf8'), cert: await readFile(cert, 'utf8') };
    this.fingerprint = new X509Certificate(this.cert.cert).fingerprint256;
    this.caFile = cert;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'https://pve');
    const method = req.method ?? 'GET';
    const path = url.pathname.replace(/^\/api2\/json/, '');
    const respond = (status: number, reason: string, body: Record<string, unknown>) => {
      this.log.push(`${method} ${path} ${status}`);
      res.statusMessage = reason.replace(/[\r\n]+/g, ' ').trim();
      res.writeHead(status, { 'content-type': 'application/json;charset=UTF-8' });
      res.end(JSON.stringify(body));
    };
    const fault = this.faults.onRequest?.(method, path);
    if (fault === 'unreachable') {
      this.log.push(`${method} ${path} unreachable`);
      await this.stop();
      return;
    }
    if (fault === 'reset' || (this.faults.resets > 0 && this.faults.resets--)) {
      this.log.push(`${method} ${path} reset`);
      req.socket.destroy();
      return;
    }
    try {
      if (this.faults.serverErrors > 0) {
        this.faults.serverErrors--;
        throw new HttpError(500, 'Internal Server Error (injected)');
      }
      if (!url.pathname.startsWith('/api2/json/')) throw new HttpError(501, `Unsupported format '${url.pathname.split('/')[2] ?? ''}'`);
      const token = this.authenticate(req.headers.authorization);
      const matched = this.schema.match(method, path);
      if (!matched) throw new HttpError(501, `Method '${method} ${url.pathname}' not implemented`);
      const params: Record<string, string> = { ...matched.pathParams };
      for (const [k, v] of url.searchParams) params[k] = v;
      if (method === 'POST' || method === 'PUT') {
        const body = await readBody(req);
        for (const [k, v] of new URLSearchParams(body)) params[k] = v;
      }
      const errors = validateParams(matched.method, params);
      if (Object.keys(errors).length > 0) throw new HttpError(400, 'Parameter verification failed.', errors);
      this.checkPermission(token, matched.method, params);
      const data = await this.serve(method, matched.template, params, token);
      respond(200, 'OK', { data: data ?? null });
    } catch (err) {
      const e = err instanceof HttpError ? err : new HttpError(500, (err as Error).message);
      respond(e.status, e.message, { data: null, ...(e.errors ? { errors: e.errors } : { message: `${e.message}\n` }) });
    }
  }

  private authenticate(header: string | undefined): { id: string; token: TestToken } {
    const m = /^PVEAPIToken=([^=]+)=(.+)$/.exec(header ?? '');
    if (!m) throw new HttpError(401, 'No ticket');
    const token = this.tokens.get(m[1]!);
    if (!token || token.secret !== m[2] || token.expired) throw new HttpError(401, 'authentication failure');
    return { id: m[1]!, token };
  }

  private has(token: TestToken, privilege: string): boolean {
    return token.privileges === '*' || token.privileges.has(privilege);
  }

  private require(token: TestToken, path: string, privilege: string): void {
    if (!this.has(token, privilege)) throw new HttpError(403, `Permission check failed (${path}, ${privilege})`);
  }

  /** The schema's `permissions.check` (`perm` with all or any of its privileges; `and`/`or` of checks). */
  private checkPermission(auth: { token: TestToken }, method: MethodSchema, params: Record<string, string>): void {
    const check = method.permissions?.check;
    if (check) this.evaluate(auth.token, check, params, true);
  }

  private evaluate(token: TestToken, check: unknown[], params: Record<string, string>, raise: boolean): boolean {
    const [kind, ...rest] = check;
    if (kind === 'and' || kind === 'or') {
      const results = (rest as unknown[][]).map((c) => this.evaluate(token, c, params, false));
      const ok = kind === 'and' ? results.every(Boolean) : results.some(Boolean);
      if (!ok && raise) throw new HttpError(403, 'Permission check failed');
      return ok;
    }
    if (kind !== 'perm') return true;
    const path = String(rest[0]).replace(/\{(\w+)\}/g, (_, name: string) => params[name] ?? '');
    const privileges = rest[1] as string[];
    const any = rest[2] === 'any';
    const ok = any ? privileges.some((p) => this.has(token, p)) : privileges.every((p) => this.has(token, p));
    if (!ok && raise) {
      const missing = any ? privileges.join('|') : privileges.find((p) => !this.has(token, p))!;
      throw new HttpError(403, `Permission check failed (${path}, ${missing})`);
    }
    return ok;
  }

  private guest(params: Record<string, string>, type: 'qemu' | 'lxc'): Guest {
    const vmid = Number(params.vmid);
    const g = this.guests.get(vmid);
    const file = type === 'qemu' ? 'qemu-server' : 'lxc';
    if (!g || g.type !== type || g.node !== params.node)
      throw new HttpError(500, `Configuration file 'nodes/${params.node}/${file}/${vmid}.conf' does not exist`);
    return g;
  }

  private node(params: Record<string, string>): string {
    if (!this.nodes.includes(params.node!)) throw new HttpError(595, `no such node '${params.node}'`);
    return params.node!;
  }

  private async serve(method: string, template: string, params: Record<string, string>, auth: { id: string; token: TestToken }): Promise<unknown> {
    const type = template.includes('/qemu') ? 'qemu' : 'lxc';
    const visible = (g: Guest) => this.has(auth.token, 'VM.Audit') && (!params.node || g.node === params.node);
    switch (`${method} ${template}`) {
      case 'GET /version':
        return { version: '9.1.3', release: '9.1', repoid: '0123abcd' };
      case 'GET /nodes':
        return this.nodes.map((node) => ({ node, status: 'online' }));
      case 'GET /cluster/resources': {
        const vms = [...this.guests.values()]
          .filter(visible)
          .map((g) => ({ id: `${g.type}/${g.vmid}`, type: g.type, vmid: g.vmid, node: g.node, name: guestName(g), status: g.status }));
        const nodes = this.nodes.map((node) => ({ id: `node/${node}`, type: 'node', node, status: 'online' }));
        if (params.type === 'vm') return vms;
        return params.type === 'node' ? nodes : [...nodes, ...vms];
      }
      case 'GET /nodes/{node}/qemu':
      case 'GET /nodes/{node}/lxc':
        this.node(params);
        return [...this.guests.values()].filter((g) => g.type === type && visible(g)).map((g) => ({ vmid: g.vmid, name: guestName(g), status: g.status }));
      case 'GET /nodes/{node}/qemu/{vmid}/status/current':
      case 'GET /nodes/{node}/lxc/{vmid}/status/current': {
        const g = this.guest(params, type);
        return { vmid: g.vmid, name: guestName(g), status: g.status, ...(type === 'qemu' && agentEnabled(g) ? { agent: 1 } : {}) };
      }
      case 'GET /nodes/{node}/qemu/{vmid}/config':
      case 'GET /nodes/{node}/lxc/{vmid}/config': {
        const g = this.guest(params, type);
        const config: Record<string, string> = { ...g.config };
        if (!truthy(params.current)) {
          Object.assign(config, g.pending);
          for (const k of g.pendingDelete) delete config[k];
        }
        return { ...config, digest: this.digest(g) };
      }
      case 'GET /nodes/{node}/qemu/{vmid}/pending':
      case 'GET /nodes/{node}/lxc/{vmid}/pending': {
        const g = this.guest(params, type);
        const keys = new Set([...Object.keys(g.config), ...Object.keys(g.pending), ...g.pendingDelete]);
        return [...keys].sort().map((key) => ({
          key,
          ...(key in g.config ? { value: g.config[key] } : {}),
          ...(key in g.pending ? { pending: g.pending[key] } : {}),
          ...(g.pendingDelete.has(key) ? { delete: 1 } : {}),
        }));
      }
      case 'POST /nodes/{node}/qemu/{vmid}/config': {
        const g = this.guest(params, type);
        this.checkEdit(auth.token, g, params);
        return this.task(g.node, 'qmconfig', String(g.vmid), auth.id, () => this.edit(g, params, 'task'));
      }
      case 'PUT /nodes/{node}/qemu/{vmid}/config':
      case 'PUT /nodes/{node}/lxc/{vmid}/config': {
        const g = this.guest(params, type);
        this.checkEdit(auth.token, g, params);
        await this.edit(g, params, 'sync');
        return null;
      }
      case 'GET /nodes/{node}/lxc/{vmid}/interfaces': {
        const g = this.guest(params, 'lxc');
        if (g.status !== 'running') throw new HttpError(500, `CT ${g.vmid} not running`);
        return (await this.backing.interfaces(g)).map((i) => ({
          name: i.name,
          hwaddr: i.mac,
          'hardware-address': i.mac,
          'ip-addresses': i.addresses.map((a) => ({ 'ip-address': a.address, 'ip-address-type': a.family === 'ipv4' ? 'inet' : 'inet6', prefix: a.prefix })),
          ...(i.addresses.find((a) => a.family === 'ipv4') ? { inet: cidrOf(i.addresses.find((a) => a.family === 'ipv4')!) } : {}),
        }));
      }
      case 'GET /nodes/{node}/qemu/{vmid}/agent/network-get-interfaces': {
        const g = this.guest(params, 'qemu');
        if (!agentEnabled(g)) throw new HttpError(500, 'No QEMU guest agent configured');
        if (g.status !== 'running') throw new HttpError(500, `VM ${g.vmid} is not running`);
        const result = (await this.backing.interfaces(g)).map((i) => ({
          name: i.name,
          'hardware-address': i.mac,
          'ip-addresses': i.addresses.map((a) => ({ 'ip-address': a.address, 'ip-address-type': a.family, prefix: a.prefix })),
        }));
        return { result };
      }
      case 'POST /nodes/{node}/qemu/{vmid}/status/start':
      case 'POST /nodes/{node}/lxc/{vmid}/status/start': {
        const g = this.guest(params, type);
        return this.task(g.node, type === 'qemu' ? 'qmstart' : 'vzstart', String(g.vmid), auth.id, () => this.startGuest(g));
      }
      case 'POST /nodes/{node}/qemu/{vmid}/status/stop':
      case 'POST /nodes/{node}/lxc/{vmid}/status/stop': {
        const g = this.guest(params, type);
        return this.task(g.node, type === 'qemu' ? 'qmstop' : 'vzstop', String(g.vmid), auth.id, async () => {
          g.status = 'stopped';
          await this.backing.stop(g);
        });
      }
      case 'GET /nodes/{node}/tasks/{upid}/status': {
        const task = this.tasks.get(params.upid!);
        if (!task || task.node !== params.node) throw new HttpError(500, `unable to parse worker upid '${params.upid}'`);
        return {
          upid: task.upid,
          node: task.node,
          pid: 4242,
          pstart: 1,
          starttime: task.starttime,
          type: task.type,
          id: task.id,
          user: task.user,
          status: task.status,
          ...(task.exitstatus ? { exitstatus: task.exitstatus } : {}),
        };
      }
      default:
        throw new HttpError(501, `Method '${method} /api2/json${template}' not implemented by the Gatehouse test server`);
    }
  }

  /** Per-key privileges of a config edit (the schema asks for any VM.Config.*), and SDN.Use on each bridge. */
  private checkEdit(token: TestToken, g: Guest, params: Record<string, string>): void {
    const keys = [...editKeys(params), ...(params.delete ?? '').split(/[,;\s]+/).filter(Boolean)];
    for (const key of keys) this.require(token, `/vms/${g.vmid}`, keyPrivilege(key));
    for (const nic of guestNics(g.type, Object.fromEntries(editKeys(params).map((k) => [k, params[k]!]))))
      if (nic.bridge) this.require(token, `/sdn/zones/localnetwork/${nic.bridge}`, 'SDN.Use');
  }

  /** Starts a task that runs `work` after the task delay; returns its UPID. */
  private task(node: string, type: string, id: string, user: string, work: () => Promise<void>): string {
    const starttime = Math.floor(Date.now() / 1000);
    const hex = (n: number) => n.toString(16).toUpperCase().padStart(8, '0');
    const upid = `UPID:${node}:${hex(4242 + this.taskCounter++)}:${hex(1)}:${hex(starttime)}:${type}:${id}:${user}:`;
    const task: Task = { upid, node, type, id, user, starttime, status: 'running' };
    this.tasks.set(upid, task);
    setTimeout(() => {
      work().then(
        () => Object.assign(task, { status: 'stopped', exitstatus: 'OK' }),
        (err: Error) => Object.assign(task, { status: 'stopped', exitstatus: err.message.split('\n')[0] }),
      );
    }, this.faults.taskDelayMs);
    return upid;
  }

  /**
   * A config edit as PVE makes it: the digest checked (in the task for QEMU's asynchronous call:
   * the task fails), deletions, reverts and new values, hot-plugged into a running guest when it
   * can be (QEMU: `hotplug` includes network), else left pending.
   */
  private async edit(g: Guest, params: Record<string, string>, mode: 'task' | 'sync'): Promise<void> {
    if (this.faults.digestConflicts > 0) {
      this.faults.digestConflicts--;
      // someone else's edit lands first
      g.config.cores = String(Number(g.config.cores ?? '1') + 1);
    }
    if (params.digest && params.digest !== this.digest(g)) {
      throw mode === 'task'
        ? new Error('checksum missmatch (file change by other user?)')
        : new HttpError(500, 'detected modified configuration - file changed by other user? Try again.');
    }
    for (const key of (params.revert ?? '').split(/[,;\s]+/).filter(Boolean)) {
      delete g.pending[key];
      g.pendingDelete.delete(key);
    }
    const running = g.status === 'running';
    const hotplugNetwork = g.type === 'lxc' || /(^|,)(network|1)(,|$)/.test(g.config.hotplug ?? DEFAULT_HOTPLUG);
    const failHotplug = mode === 'task' && this.faults.failTasks > 0 ? (this.faults.failTasks--, true) : false;
    const errors: string[] = [];
    for (const key of (params.delete ?? '').split(/[,;\s]+/).filter(Boolean)) {
      if (!(key in g.config) && !(key in g.pending)) continue;
      if (/^net\d+$/.test(key) && running) {
        if (!hotplugNetwork) {
          g.pendingDelete.add(key);
          continue;
        }
        await this.backing.unplug(g, Number(key.slice(3)));
      }
      delete g.config[key];
      delete g.pending[key];
    }
    for (const key of editKeys(params)) {
      const value = params[key]!;
      if (!/^net\d+$/.test(key) || !running) {
        if (/^net\d+$/.test(key)) await this.checkBridge(g, key, value);
        g.config[key] = value;
        continue;
      }
      await this.checkBridge(g, key, value);
      if (!hotplugNetwork) {
        g.pending[key] = value;
        continue;
      }
      if (failHotplug) {
        g.pending[key] = value;
        errors.push(`${key}: hotplug problem - VM ${g.vmid} qmp command 'netdev_add' failed - injected fault`);
        continue;
      }
      const index = Number(key.slice(3));
      if (key in g.config) await this.backing.unplug(g, index);
      g.config[key] = value;
      const [nic] = guestNics(g.type, { [key]: value });
      if (nic) await this.backing.plug(g, nic);
    }
    if (errors.length > 0) throw new Error(errors.join('; '));
  }

  private async checkBridge(g: Guest, key: string, value: string): Promise<void> {
    const [nic] = guestNics(g.type, { [key]: value });
    if (nic?.bridge && !(await this.backing.hasBridge(g.node, nic.bridge))) throw new HttpError(500, `bridge '${nic.bridge}' does not exist`);
  }

  /** Applies pending changes and plugs every NIC. */
  private async startGuest(g: Guest): Promise<void> {
    if (g.status === 'running') throw new Error(`VM ${g.vmid} already running`);
    Object.assign(g.config, g.pending);
    for (const k of g.pendingDelete) delete g.config[k];
    g.pending = {};
    g.pendingDelete.clear();
    g.status = 'running';
    for (const nic of guestNics(g.type, g.config)) await this.backing.plug(g, nic);
  }
}

/** The keys a config edit sets (not the call's own parameters). */
function editKeys(params: Record<string, string>): string[] {
  const own = new Set(['node', 'vmid', 'digest', 'delete', 'revert', 'skiplock', 'background_delay', 'force']);
  return Object.keys(params).filter((k) => !own.has(k));
}

function guestName(g: Guest): string {
  return (g.type === 'qemu' ? g.config.name : g.config.hostname) ?? `${g.type === 'qemu' ? 'VM' : 'CT'} ${g.vmid}`;
}

function agentEnabled(g: Guest): boolean {
  return /^(1|enabled=1)/.test(g.config.agent ?? '');
}

function truthy(v: string | undefined): boolean {
  return v !== undefined && /^(1|true|yes|on)$/i.test(v);
}

function cidrOf(a: { address: string; prefix: number }): string {
  return `${a.address}/${a.prefix}`;
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}
