/**
 * How web proxies become Caddy configuration.
 *
 * Each proxy (and each instance sub-domain of a wildcard template) is a *site*: its routing, plus
 * — when it has TLS — one automation policy or one loaded certificate, each tagged with its own
 * `@id`, and its names in the `automate` list.
 *
 * Routing is flat in the number of domains (Caddy 2.6 tries a server's routes in order, ~0.3 µs
 * of CPU per route passed: one route per domain cost 418 µs per request at the 1,000th against
 * 149 µs at the 1st). Exact domains go into **host tables**: a few routes, each matching a set of
 * hosts (a Caddy host matcher of more than 100 names is sorted and binary-searched) and holding a
 * `map` from `{http.request.host}` to the placeholder `{gh_upstream}` that its `reverse_proxy`
 * dials. A domain's table is chosen by its *mode* (what the handlers do apart from the upstream:
 * HTTP or HTTPS to the target, WebSocket or not, redirect to HTTPS or not) and by a hash of the
 * domain among `tableCount(n)` tables per mode; the count grows with the square root of the
 * domains, which keeps both the routes passed and the map's linear scan short (16 tables of ~625
 * at 10,000). Wildcards stay one route each, after every table, so a domain with its own proxy is
 * never shadowed (a `*` label matches exactly one label, so wildcards of different depths never
 * overlap). A change to one domain rewrites one table route (`PATCH /id/<table>`).
 *
 * One server listens on the HTTP and the HTTPS port (Caddy speaks plain HTTP on its `http_port`
 * even when the server has TLS connection policies); a site with TLS redirects plain HTTP to
 * HTTPS, which Caddy's ACME HTTP-01 solver answers before any route.
 */
import type { CaddyAutomationPolicy, CaddyConfig, CaddyHandler, CaddyHttpServer, CaddyRoute } from 'caddy-api-client';

/** The Caddy server that carries every proxy, and its `@id` (its presence says Caddy has our config). */
export const PROXY_SERVER = 'gatehouse';
export const SERVER_ID = 'gh-proxy-server';
/** What a site is: 0 exact domain, 1 template sub-domain (both in host tables), 2 wildcard (own route, at the end). */
export type RouteGroup = 0 | 1 | 2;
/** The server's route list. */
export const ROUTES_PATH = ['apps', 'http', 'servers', PROXY_SERVER, 'routes'];

/** The logger Caddy's access log for the proxy server goes to (see `proxyConfig`). */
export const ACCESS_LOGGER = 'gatehouse_access';
/** Caddy's loggers whose errors say why a certificate could not be obtained. */
export const TLS_LOGGERS = ['tls.obtain', 'tls.issuance', 'tls.renew'];

/** Where and how Caddy serves the proxies. */
export interface ProxySettings {
  /** Host part of the listen addresses ('' = every address). */
  listenHost: string;
  httpPort: number;
  httpsPort: number;
  acme: {
    /** ACME directory URL (Let's Encrypt production by default). */
    directoryUrl: string;
    email?: string;
    /** PEM files of roots to trust for the ACME server's own HTTPS (pebble's CA in tests). */
    trustedRootsPemFiles?: string[];
  };
  /** Caddy sends its access and TLS logs here (`unix//path` or `tcp/host:port`); none: not sent. */
  logAddress?: string;
}

export const LETS_ENCRYPT_DIRECTORY = 'https://acme-v02.api.letsencrypt.org/directory';

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
  /** Set for a site with TLS: plain HTTP requests are redirected to this HTTPS port. */
  redirectToHttpsPort?: number;
}

/** Everything one proxy or template sub-domain puts into Caddy. */
export interface ProxySite {
  /** The route's `@id`, which also names the site. */
  key: string;
  group: RouteGroup;
  /** The domain the route matches. */
  domain: string;
  /** A wildcard's own route. */
  route?: CaddyRoute;
  /** An exact domain's entry in a host table: where it dials, and the table's mode. */
  upstream?: { dial: string; mode: RouteMode };
  /** An automation policy (self-signed or ACME) with its own `@id`. */
  policy?: CaddyAutomationPolicy & { '@id': string };
  /** A loaded certificate (uploaded) with its own `@id`. */
  pem?: { '@id': string; certificate: string; key: string; tags: string[] };
  /** The name Caddy manages a certificate for (policy sites only). */
  automate?: string;
}

export function proxyRouteId(proxyId: string): string {
  return `gh-proxy-${proxyId}`;
}

export const POLICIES_PATH = ['apps', 'tls', 'automation', 'policies'];
export const LOAD_PEM_PATH = ['apps', 'tls', 'certificates', 'load_pem'];
export const AUTOMATE_PATH = ['apps', 'tls', 'certificates', 'automate'];

/** What a proxy's handlers do apart from the upstream they dial: the sites of one host table share it. */
export interface RouteMode {
  targetProtocol: 'http' | 'https';
  websocket: boolean;
  redirectToHttpsPort?: number;
}

/** A mode as a short name, part of its tables' `@id`s (`http`, `https-nows-tls443` …). */
export function modeKey(mode: RouteMode): string {
  return `${mode.targetProtocol}${mode.websocket ? '' : '-nows'}${mode.redirectToHttpsPort === undefined ? '' : `-tls${mode.redirectToHttpsPort}`}`;
}

/** `host:port` to dial a target (IPv6 in brackets). */
export function targetDial(address: string, port: number): string {
  return `${address.includes(':') ? `[${address}]` : address}:${port}`;
}

/** The handlers of a route: the redirect of plain HTTP to HTTPS (TLS sites), then `reverse_proxy` to `dial`. */
function proxyHandlers(dial: string, mode: RouteMode): CaddyHandler[] {
  const proxy: CaddyRoute = {
    handle: [
      {
        handler: 'reverse_proxy',
        upstreams: [{ dial }],
        // instances serving HTTPS mostly carry self-signed certificates: encrypt, do not verify
        ...(mode.targetProtocol === 'https' ? { transport: { protocol: 'http', tls: { insecure_skip_verify: true } } } : {}),
        // X-Forwarded-For, -Proto and -Host are set by reverse_proxy itself
        ...(mode.websocket ? {} : { headers: { request: { delete: ['Upgrade', 'Connection'] } } }),
      },
    ],
  };
  if (mode.redirectToHttpsPort === undefined) return proxy.handle!;
  return [
    {
      handler: 'subroute',
      routes: [
        {
          match: [{ protocol: 'http' }],
          handle: [
            {
              handler: 'static_response',
              status_code: 308,
              headers: { Location: [`https://{http.request.host}${mode.redirectToHttpsPort === 443 ? '' : `:${mode.redirectToHttpsPort}`}{http.request.uri}`] },
            },
          ],
        },
        proxy,
      ],
    },
  ];
}

/** The route of one proxy (wildcards; also usable for any single domain). */
export function proxyRoute(p: ProxyRouteSpec): CaddyRoute {
  return { '@id': proxyRouteId(p.id), match: [{ host: [p.domain] }], handle: proxyHandlers(targetDial(p.targetAddress, p.targetPort), p), terminal: true };
}

/** The placeholder a host table's map sets and its `reverse_proxy` dials. */
export const UPSTREAM_PLACEHOLDER = '{gh_upstream}';

/** How many host tables each mode has for `n` exact domains: 1 up to 160, then doubling with the square root of n (16 at 10,000). */
export function tableCount(n: number): number {
  return n <= 160 ? 1 : 2 ** Math.ceil(Math.log2(Math.sqrt(n / 40)));
}

/** Which of `count` tables a domain is in: FNV-1a of the domain, so a domain stays in its table while the count does. */
export function tableOf(domain: string, count: number): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < domain.length; i++) hash = Math.imul(hash ^ domain.charCodeAt(i), 0x01000193) >>> 0;
  return hash % count;
}

/** A host table: one route for `entries` (domain → dial) of one mode. */
export function hostTableRoute(id: string, mode: RouteMode, entries: readonly { domain: string; dial: string }[]): CaddyRoute {
  return {
    '@id': id,
    match: [{ host: entries.map((e) => e.domain) }],
    handle: [
      {
        handler: 'map',
        source: '{http.request.host}',
        destinations: [UPSTREAM_PLACEHOLDER],
        mappings: entries.map((e) => ({ input: e.domain, outputs: [e.dial] })),
      },
      ...proxyHandlers(UPSTREAM_PLACEHOLDER, mode),
    ],
    terminal: true,
  };
}

/** The proxy server's routes for the sites: host tables (by mode, then table number), then the wildcards' routes in site order. */
export function serverRoutes(sites: readonly ProxySite[]): CaddyRoute[] {
  const exact = sites.filter((s) => s.upstream);
  const count = tableCount(exact.length);
  const tables = new Map<string, { mode: RouteMode; entries: { domain: string; dial: string }[] }>();
  for (const s of exact) {
    const { dial, mode } = s.upstream!;
    const id = `gh-hosts-${modeKey(mode)}-${tableOf(s.domain, count)}`;
    let table = tables.get(id);
    if (!table) tables.set(id, (table = { mode, entries: [] }));
    table.entries.push({ domain: s.domain, dial });
  }
  const ids = [...tables.keys()].sort();
  return [
    ...ids.map((id) => hostTableRoute(id, tables.get(id)!.mode, tables.get(id)!.entries)),
    ...sites.flatMap((s) => (s.group === 2 && s.route ? [s.route] : [])),
  ];
}

/** A site's routing: a wildcard gets its own route, an exact domain an entry in a host table. */
export function siteRouting(p: ProxyRouteSpec, group: RouteGroup): Pick<ProxySite, 'route' | 'upstream'> {
  if (group === 2) return { route: proxyRoute(p) };
  const { targetProtocol, websocket, redirectToHttpsPort } = p;
  return {
    upstream: {
      dial: targetDial(p.targetAddress, p.targetPort),
      mode: { targetProtocol, websocket, ...(redirectToHttpsPort === undefined ? {} : { redirectToHttpsPort }) },
    },
  };
}

/** The site of a proxy: its route and, by TLS mode, its policy or loaded certificate. */
export function proxySite(
  p: ProxyRouteSpec & { tlsMode: 'none' | 'self_signed' | 'uploaded' | 'acme'; certificatePem?: string | null; privateKeyPem?: string | null },
  settings: ProxySettings,
  group: RouteGroup = p.domain.startsWith('*.') ? 2 : 0,
): ProxySite {
  const tls = p.tlsMode !== 'none';
  const key = proxyRouteId(p.id);
  const site: ProxySite = { key, group, domain: p.domain, ...siteRouting({ ...p, redirectToHttpsPort: tls ? settings.httpsPort : undefined }, group) };
  if (p.tlsMode === 'uploaded' && p.certificatePem && p.privateKeyPem) {
    site.pem = { '@id': `gh-cert-${p.id}`, certificate: p.certificatePem, key: p.privateKeyPem, tags: [key] };
  } else if (p.tlsMode === 'self_signed' || p.tlsMode === 'acme') {
    site.policy = { '@id': `gh-tls-${p.id}`, subjects: [p.domain], issuers: [p.tlsMode === 'acme' ? acmeIssuer(settings) : { module: 'internal' }] };
    site.automate = p.domain;
  }
  return site;
}

function acmeIssuer(settings: ProxySettings): NonNullable<CaddyAutomationPolicy['issuers']>[number] {
  const { directoryUrl, email, trustedRootsPemFiles } = settings.acme;
  return {
    module: 'acme',
    ca: directoryUrl,
    ...(email ? { email } : {}),
    ...(trustedRootsPemFiles?.length ? { trusted_roots_pem_files: trustedRootsPemFiles } : {}),
    // HTTP-01 on the HTTP port; TLS-ALPN-01 needs the HTTPS port to be 443, which tests cannot bind
    ...(settings.httpsPort === 443 ? {} : { challenges: { 'tls-alpn': { disabled: true } } }),
  };
}

/** The proxy server with the sites' routes (see `serverRoutes`). */
export function proxyServer(listen: string[], routes: CaddyRoute[] = [], logs = false): CaddyHttpServer {
  return {
    '@id': SERVER_ID,
    listen,
    routes,
    // certificates are the sites' business (policies, automate, loaded): no automatic HTTPS
    automatic_https: { disable: true },
    tls_connection_policies: [{}],
    ...(logs ? { logs: { default_logger_name: ACCESS_LOGGER } } : {}),
  };
}

/** What the sites put into Caddy's lists: the server's routes, the TLS policies, the loaded certificates, the names Caddy manages. */
export interface SiteObjects {
  routes: CaddyRoute[];
  policies: NonNullable<ProxySite['policy']>[];
  pems: NonNullable<ProxySite['pem']>[];
  automate: string[];
}

export function siteObjects(sites: readonly ProxySite[]): SiteObjects {
  return {
    routes: serverRoutes(sites),
    policies: sites.flatMap((s) => (s.policy ? [s.policy] : [])),
    pems: sites.flatMap((s) => (s.pem ? [s.pem] : [])),
    automate: sites.flatMap((s) => (s.automate ? [s.automate] : [])),
  };
}

/** A whole config for Caddy: the admin endpoint as given, the proxy server, TLS and log routing. */
export function proxyConfig(options: { admin: CaddyConfig['admin']; settings: ProxySettings; sites?: ProxySite[] }): CaddyConfig {
  const { settings } = options;
  const objects = siteObjects(options.sites ?? []);
  const host = settings.listenHost.includes(':') ? `[${settings.listenHost}]` : settings.listenHost;
  const listen = [`${host}:${settings.httpPort}`, `${host}:${settings.httpsPort}`];
  const config: CaddyConfig = {
    admin: options.admin,
    apps: {
      http: {
        http_port: settings.httpPort,
        https_port: settings.httpsPort,
        servers: { [PROXY_SERVER]: proxyServer(listen, objects.routes, settings.logAddress !== undefined) },
      },
      tls: {
        certificates: {
          automate: objects.automate,
          load_pem: objects.pems,
        },
        automation: { policies: objects.policies },
      },
      // the internal issuer's CA stays Caddy's own: never installed into this machine's trust store
      pki: { certificate_authorities: { local: { install_trust: false } } },
    },
  };
  if (settings.logAddress !== undefined) {
    config.logging = {
      logs: {
        default: { exclude: [`http.log.access.${ACCESS_LOGGER}`] },
        [ACCESS_LOGGER]: {
          writer: { output: 'net', address: settings.logAddress },
          encoder: { format: 'json' },
          include: [`http.log.access.${ACCESS_LOGGER}`, ...TLS_LOGGERS],
        },
      },
    };
  }
  return config;
}
