/**
 * A small client for the Docker Engine API over its unix socket (node:http with `socketPath`; no
 * CLI, no output parsing). Every path is pinned to API v1.41, the newest Docker 20.10 speaks and
 * one every later Engine still accepts, so the shapes below never change under the plugin.
 *
 * Errors are the SDK's: a socket that is missing or refuses connections (dockerd stopped or
 * restarting) is `HostUnreachableError`; the caller decides what a 404 means; 403/409 (a subnet
 * overlap, a name in use) are `ConflictError`; other failures carry Docker's own message.
 */
import { request } from 'node:http';
import { ConflictError, DriverInternalError, HostUnreachableError, TransientError } from '@gatehouse/sdk';

/** The Engine API version every request uses. */
export const ENGINE_API_VERSION = '1.41';

/** One network a container is connected to, as `GET /containers/{id}/json` shows it. */
export interface EndpointSettings {
  IPAMConfig: { IPv4Address?: string; IPv6Address?: string } | null;
  Aliases: string[] | null;
  NetworkID: string;
  Gateway: string;
  IPAddress: string;
  IPPrefixLen: number;
  GlobalIPv6Address: string;
  GlobalIPv6PrefixLen: number;
  MacAddress: string;
}

/** The fields of a container inspection the plugin reads. */
export interface ContainerInspect {
  Id: string;
  Name: string;
  State: { Running: boolean; Pid: number };
  NetworkSettings: { Networks: Record<string, EndpointSettings> | null };
}

/** The fields of a network inspection the plugin reads. */
export interface NetworkInspect {
  Id: string;
  Name: string;
  Driver: string;
  Labels: Record<string, string> | null;
  IPAM: { Config: { Subnet?: string; Gateway?: string }[] | null };
  Containers: Record<string, unknown> | null;
}

interface Response {
  status: number;
  body: unknown;
}

// what node reports when nothing listens on the socket, or it went away mid-request
const UNREACHABLE = new Set(['ENOENT', 'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ENOTSOCK', 'EACCES', 'ETIMEDOUT']);

/** The Engine API of one dockerd. */
export class DockerEngine {
  constructor(
    readonly socketPath: string,
    private readonly timeoutMs = 30_000,
  ) {}

  /** `GET /_ping`; throws HostUnreachableError when dockerd does not answer. */
  async ping(): Promise<void> {
    const r = await this.send('GET', '/_ping');
    if (r.status !== 200) throw new HostUnreachableError(`Docker Engine at ${this.socketPath} answered _ping with HTTP ${r.status}`);
  }

  /** A container by id or name; undefined when there is none. */
  async container(idOrName: string): Promise<ContainerInspect | undefined> {
    const r = await this.send('GET', `/containers/${encodeURIComponent(idOrName)}/json`);
    if (r.status === 404) return undefined;
    return this.ok(r, `inspecting container ${idOrName}`) as ContainerInspect;
  }

  /** Every container, running or not, fully inspected. */
  async containers(): Promise<ContainerInspect[]> {
    const list = this.ok(await this.send('GET', '/containers/json?all=1'), 'listing containers') as { Id: string }[];
    const inspected: ContainerInspect[] = [];
    for (const { Id } of list) {
      const c = await this.container(Id);
      if (c) inspected.push(c); // removed between the list and the inspection: gone
    }
    return inspected;
  }

  /** A network by id or name; undefined when there is none. */
  async network(idOrName: string): Promise<NetworkInspect | undefined> {
    const r = await this.send('GET', `/networks/${encodeURIComponent(idOrName)}`);
    if (r.status === 404) return undefined;
    return this.ok(r, `inspecting network ${idOrName}`) as NetworkInspect;
  }

  /** Every network. */
  async networks(): Promise<NetworkInspect[]> {
    return this.ok(await this.send('GET', '/networks'), 'listing networks') as NetworkInspect[];
  }

  /** Creates a bridge network with one IPv4 subnet; returns its id. */
  async createNetwork(name: string, subnet: string, gateway: string | null, labels: Record<string, string>): Promise<string> {
    const body = {
      Name: name,
      Driver: 'bridge',
      CheckDuplicate: true,
      Labels: labels,
      IPAM: { Driver: 'default', Config: [{ Subnet: subnet, ...(gateway ? { Gateway: gateway } : {}) }] },
    };
    const r = this.ok(await this.send('POST', '/networks/create', body), `creating network ${name} (${subnet})`) as { Id: string };
    return r.Id;
  }

  /** Removes a network; succeeds when it is already gone. */
  async removeNetwork(idOrName: string): Promise<void> {
    const r = await this.send('DELETE', `/networks/${encodeURIComponent(idOrName)}`);
    if (r.status !== 404) this.ok(r, `removing network ${idOrName}`);
  }

  /** Connects a container to a network with static addresses and aliases. */
  async connect(network: string, container: string, endpoint: { IPv4Address?: string; IPv6Address?: string; aliases: string[] }): Promise<void> {
    const IPAMConfig = {
      ...(endpoint.IPv4Address ? { IPv4Address: endpoint.IPv4Address } : {}),
      ...(endpoint.IPv6Address ? { IPv6Address: endpoint.IPv6Address } : {}),
    };
    const body = { Container: container, EndpointConfig: { IPAMConfig, Aliases: endpoint.aliases } };
    this.ok(await this.send('POST', `/networks/${encodeURIComponent(network)}/connect`, body), `connecting container ${container} to network ${network}`);
  }

  /** Disconnects a container from a network; succeeds when it is not connected (or either is gone). */
  async disconnect(network: string, container: string): Promise<void> {
    const r = await this.send('POST', `/networks/${encodeURIComponent(network)}/disconnect`, { Container: container, Force: true });
    if (r.status === 404) return;
    // Docker 20.10 answers 500 "container ... is not connected to network ..." for an endpoint already gone
    if (r.status === 500 && /is not connected/.test(messageOf(r.body))) return;
    this.ok(r, `disconnecting container ${container} from network ${network}`);
  }

  /** Raw request (tests use it for what the plugin itself never does: create containers, import images). */
  async send(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<Response> {
    const payload = body === undefined ? undefined : Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
    return new Promise<Response>((resolve, reject) => {
      const req = request(
        {
          socketPath: this.socketPath,
          method,
          path: `/v${ENGINE_API_VERSION}${path}`,
          headers: { Host: 'docker', ...(payload ? { 'Content-Type': contentType, 'Content-Length': payload.length } : {}) },
          timeout: this.timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', (err) => reject(this.unreachable(err, method, path)));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown = text;
            if ((res.headers['content-type'] ?? '').includes('json') && text.trim() !== '') {
              try {
                parsed = JSON.parse(text);
              } catch {
                parsed = text; // a stream of JSON lines (image import progress)
              }
            }
            resolve({ status: res.statusCode ?? 0, body: parsed });
          });
        },
      );
      req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer within ${this.timeoutMs} ms`), { code: 'ETIMEDOUT' })));
      req.on('error', (err) => reject(this.unreachable(err, method, path)));
      req.end(payload);
    });
  }

  /** The body of a successful response; a failure as the SDK error that says what it means. */
  private ok(r: Response, what: string): unknown {
    if (r.status >= 200 && r.status < 300) return r.body;
    const message = `Failed ${what} on Docker Engine ${this.socketPath}: ${messageOf(r.body) || `HTTP ${r.status}`}`;
    if (r.status === 403 || r.status === 409) throw new ConflictError(message);
    // 500s are mostly the daemon's own trouble (starting, stopping, a busy network driver)
    if (r.status >= 500) throw new TransientError(message);
    throw new DriverInternalError(message);
  }

  private unreachable(err: Error & { code?: string }, method: string, path: string): Error {
    if (err.code && UNREACHABLE.has(err.code))
      return new HostUnreachableError(`Docker Engine at ${this.socketPath} is unreachable (${err.code}) for ${method} ${path}`, { cause: err });
    return new DriverInternalError(`Docker Engine request ${method} ${path} failed: ${err.message}`, { cause: err });
  }
}

function messageOf(body: unknown): string {
  if (typeof body === 'object' && body !== null && typeof (body as { message?: unknown }).message === 'string') return (body as { message: string }).message;
  return typeof body === 'string' ? body.trim() : '';
}
