/**
 * How web proxies become Caddy configuration: one route per proxy, tagged `@id` `gh-proxy-<id>`
 * and upserted by that id (Caddy 2.6 accepts duplicate ids, so never a blind append). The
 * server's routes hold two groups — exact domains first, then wildcards — so a domain with its own
 * proxy is never shadowed by a wildcard added before it (Caddy tries routes in order, and a `*`
 * label matches exactly one label, so wildcards of different depths never overlap).
 */
import type { CaddyConfig, CaddyHttpServer, CaddyRoute } from 'caddy-api-client';

/** The Caddy server that carries every proxy. */
export const PROXY_SERVER = 'gatehouse';
/** The `@id`s of the two route groups. */
export const EXACT_GROUP = 'gh-proxies-exact';
export const WILDCARD_GROUP = 'gh-proxies-wildcard';

/** What a route needs of a proxy. */
export interface ProxyRouteSpec {
  id: string;
  /** Lower-case punycode, no trailing dot; `*.` prefix for a wildcard. */
  domain: string;
  targetAddress: string;
  targetPort: number;
  targetProtocol: 'http' | 'https';
  /** Upgrade requests pass through (reverse_proxy does that by itself); false strips Upgrade. */
  websocket: boolean;
}

export function proxyRouteId(proxyId: string): string {
  return `gh-proxy-${proxyId}`;
}

/** The config path of the group a proxy's route belongs in. */
export function groupPath(domain: string): (string | number)[] {
  return ['apps', 'http', 'servers', PROXY_SERVER, 'routes', domain.startsWith('*.') ? 1 : 0, 'handle', 0, 'routes'];
}

/** The route of one proxy. */
export function proxyRoute(p: ProxyRouteSpec): CaddyRoute {
  const host = p.targetAddress.includes(':') ? `[${p.targetAddress}]` : p.targetAddress;
  return {
    '@id': proxyRouteId(p.id),
    match: [{ host: [p.domain] }],
    handle: [
      {
        handler: 'reverse_proxy',
        upstreams: [{ dial: `${host}:${p.targetPort}` }],
        // instances serving HTTPS mostly carry self-signed certificates: encrypt, do not verify
        ...(p.targetProtocol === 'https' ? { transport: { protocol: 'http', tls: { insecure_skip_verify: true } } } : {}),
        // X-Forwarded-For, -Proto and -Host are set by reverse_proxy itself
        ...(p.websocket ? {} : { headers: { request: { delete: ['Upgrade', 'Connection'] } } }),
      },
    ],
    terminal: true,
  };
}

/** The proxy server with both groups holding `routes` (sorted into exact and wildcard). */
export function proxyServer(listen: string[], routes: ProxyRouteSpec[] = []): CaddyHttpServer {
  const group = (id: string, wildcard: boolean): CaddyRoute => ({
    '@id': id,
    handle: [{ handler: 'subroute', routes: routes.filter((r) => r.domain.startsWith('*.') === wildcard).map(proxyRoute) }],
  });
  return { listen, routes: [group(EXACT_GROUP, false), group(WILDCARD_GROUP, true)] };
}

/** A whole config for Caddy: the admin endpoint as given and the proxy server. */
export function proxyConfig(options: { admin: CaddyConfig['admin']; listen: string[]; routes?: ProxyRouteSpec[] }): CaddyConfig {
  return {
    admin: options.admin,
    apps: { http: { servers: { [PROXY_SERVER]: { ...proxyServer(options.listen, options.routes), automatic_https: { disable: true } } } } },
  };
}
