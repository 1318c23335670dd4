/**
 * How web proxies become Caddy configuration.
 *
 * Each proxy (and each instance sub-domain of a wildcard template) is a *site*: one route tagged
 * `@id`, plus — when it has TLS — one automation policy or one loaded certificate, each tagged with
 * its own `@id`, and its names in the `automate` list. Sites are upserted by those ids (Caddy 2.6
 * accepts duplicate ids, so never a blind append), so a change to one proxy touches only its own
 * objects.
 *
 * The server's routes are the sites' routes themselves, not subroutes: Caddy compiles a server's
 * route list once per config, a subroute's on every request (measured: 1,000 proxies in one
 * subroute cost 363–629 µs of Caddy CPU per request, against 134 µs for one). Exact domains and
 * template sub-domains are inserted at the front and wildcards appended at the end, so a domain
 * with its own proxy is never shadowed by a wildcard added before it (a `*` label matches exactly
 * one label, so wildcards of different depths never overlap). One server listens on the HTTP and the HTTPS port (Caddy speaks plain HTTP on its
 * `http_port` even when the server has TLS connection policies); a site with TLS redirects plain
 * HTTP to HTTPS, which Caddy's ACME HTTP-01 solver answers before any route.
 */
import type { CaddyAutomationPolicy, CaddyConfig, CaddyHttpServer, CaddyRoute } from 'caddy-api-client';

/** The Caddy server that carries every proxy, and its `@id` (its presence says Caddy has our config). */
export const PROXY_SERVER = 'gatehouse';
export const SERVER_ID = 'gh-proxy-server';
/** Where a site's route goes: 0 exact domain, 1 template sub-domain (both at the front), 2 wildcard (at the end). */
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
  /** Absent for a template's own site, which only holds its wildcard certificate's policy. */
  route?: CaddyRoute;
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

/** Where a new route of the group is put in the route list. */
export function routePosition(group: RouteGroup): 'start' | 'end' {
  return group === 2 ? 'end' : 'start';
}

export const POLICIES_PATH = ['apps', 'tls', 'automation', 'policies'];
export const LOAD_PEM_PATH = ['apps', 'tls', 'certificates', 'load_pem'];
export const AUTOMATE_PATH = ['apps', 'tls', 'certificates', 'automate'];

/** The route of one proxy. */
export function proxyRoute(p: ProxyRouteSpec): CaddyRoute {
  const host = p.targetAddress.includes(':') ? `[${p.targetAddress}]` : p.targetAddress;
  const proxy: CaddyRoute = {
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
  };
  const handle: CaddyRoute['handle'] =
    p.redirectToHttpsPort === undefined
      ? proxy.handle
      : [
          {
            handler: 'subroute',
            routes: [
              {
                match: [{ protocol: 'http' }],
                handle: [
                  {
                    handler: 'static_response',
                    status_code: 308,
                    headers: { Location: [`https://{http.request.host}${p.redirectToHttpsPort === 443 ? '' : `:${p.redirectToHttpsPort}`}{http.request.uri}`] },
                  },
                ],
              },
              proxy,
            ],
          },
        ];
  return { '@id': proxyRouteId(p.id), match: [{ host: [p.domain] }], handle, terminal: true };
}

/** The site of a proxy: its route and, by TLS mode, its policy or loaded certificate. */
export function proxySite(
  p: ProxyRouteSpec & { tlsMode: 'none' | 'self_signed' | 'uploaded' | 'acme'; certificatePem?: string | null; privateKeyPem?: string | null },
  settings: ProxySettings,
  group: RouteGroup = p.domain.startsWith('*.') ? 2 : 0,
): ProxySite {
  const tls = p.tlsMode !== 'none';
  const key = proxyRouteId(p.id);
  const site: ProxySite = { key, group, domain: p.domain, route: proxyRoute({ ...p, redirectToHttpsPort: tls ? settings.httpsPort : undefined }) };
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

/** The proxy server with the sites' routes: exact domains, template sub-domains, then wildcards. */
export function proxyServer(listen: string[], sites: ProxySite[] = [], logs = false): CaddyHttpServer {
  const group = (index: RouteGroup): CaddyRoute[] => sites.flatMap((s) => (s.group === index && s.route ? [s.route] : []));
  return {
    '@id': SERVER_ID,
    listen,
    routes: [...group(0), ...group(1), ...group(2)],
    // certificates are the sites' business (policies, automate, loaded): no automatic HTTPS
    automatic_https: { disable: true },
    tls_connection_policies: [{}],
    ...(logs ? { logs: { default_logger_name: ACCESS_LOGGER } } : {}),
  };
}

/** A whole config for Caddy: the admin endpoint as given, the proxy server, TLS and log routing. */
export function proxyConfig(options: { admin: CaddyConfig['admin']; settings: ProxySettings; sites?: ProxySite[] }): CaddyConfig {
  const { settings } = options;
  const sites = options.sites ?? [];
  const host = settings.listenHost.includes(':') ? `[${settings.listenHost}]` : settings.listenHost;
  const listen = [`${host}:${settings.httpPort}`, `${host}:${settings.httpsPort}`];
  const config: CaddyConfig = {
    admin: options.admin,
    apps: {
      http: {
        http_port: settings.httpPort,
        https_port: settings.httpsPort,
        servers: { [PROXY_SERVER]: proxyServer(listen, sites, settings.logAddress !== undefined) },
      },
      tls: {
        certificates: {
          automate: sites.flatMap((s) => (s.automate ? [s.automate] : [])),
          load_pem: sites.flatMap((s) => (s.pem ? [s.pem] : [])),
        },
        automation: { policies: sites.flatMap((s) => (s.policy ? [s.policy] : [])) },
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
