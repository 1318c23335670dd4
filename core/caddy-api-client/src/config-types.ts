/**
 * A typed subset of Caddy's JSON config (https://caddyserver.com/docs/json/), the parts a reverse
 * proxy with TLS needs: the HTTP app (servers, routes, matchers, reverse_proxy, subroute,
 * static_response, headers), the TLS app (automation policies with internal/ACME issuers, loaded
 * certificates) and the PKI app. Every object keeps an index signature, so fields and modules not
 * listed here still type-check; field names are Caddy's own (snake_case).
 */

/** A Caddy duration: nanoseconds as a number, or a Go duration string (`"30s"`, `"1h"`). */
export type CaddyDuration = number | string;

/** The whole config document (what `load` sends and `getConfig()` returns). */
export interface CaddyConfig {
  admin?: CaddyAdminConfig;
  logging?: Record<string, unknown>;
  storage?: { module: string; [key: string]: unknown };
  apps?: CaddyApps;
  [key: string]: unknown;
}

/** The admin endpoint itself. */
export interface CaddyAdminConfig {
  disabled?: boolean;
  /** `unix//run/caddy/admin.sock` or `127.0.0.1:2019`; default `localhost:2019`. */
  listen?: string;
  enforce_origin?: boolean;
  /** Allowed Host/Origin values (`127.0.0.1:2019`); default: the listen address's loopback names, `""` for unix sockets. */
  origins?: string[];
  config?: {
    /** Whether Caddy autosaves every loaded config to disk (default true). */
    persist?: boolean;
    load?: Record<string, unknown>;
    [key: string]: unknown;
  };
  [key: string]: unknown;
}

/** The apps Caddy runs, by name. */
export interface CaddyApps {
  http?: CaddyHttpApp;
  tls?: CaddyTlsApp;
  pki?: CaddyPkiApp;
  [app: string]: unknown;
}

// ---------------------------------------------------------------------------------------------
// HTTP app

/** `apps.http`. */
export interface CaddyHttpApp {
  /** Port Caddy treats as HTTP for automatic HTTPS redirects (default 80). */
  http_port?: number;
  /** Port Caddy treats as HTTPS (default 443). */
  https_port?: number;
  grace_period?: CaddyDuration;
  servers?: Record<string, CaddyHttpServer>;
  [key: string]: unknown;
}

/** One HTTP server: its listeners and its route list. */
export interface CaddyHttpServer {
  /** Network addresses: `":443"`, `"127.0.0.1:8080"`, `"unix//run/x.sock"`. */
  listen?: string[];
  read_timeout?: CaddyDuration;
  read_header_timeout?: CaddyDuration;
  write_timeout?: CaddyDuration;
  idle_timeout?: CaddyDuration;
  max_header_bytes?: number;
  routes?: CaddyRoute[];
  errors?: { routes?: CaddyRoute[] };
  tls_connection_policies?: CaddyTlsConnectionPolicy[];
  automatic_https?: CaddyAutomaticHttps;
  strict_sni_host?: boolean;
  logs?: Record<string, unknown>;
  /** `["h1", "h2", "h3"]`. */
  protocols?: string[];
  [key: string]: unknown;
}

/** Per-server automatic HTTPS switches. */
export interface CaddyAutomaticHttps {
  /** Turns automatic HTTPS off entirely (no certificates, no redirects). */
  disable?: boolean;
  disable_redirects?: boolean;
  /** Keeps redirects but manages no certificates (Caddy ≥ 2.6). */
  disable_certificates?: boolean;
  /** Hosts to leave out of automatic HTTPS. */
  skip?: string[];
  skip_certificates?: string[];
  ignore_loaded_certificates?: boolean;
  [key: string]: unknown;
}

/** How TLS handshakes are served on a server; the first policy whose `match` fits is used. */
export interface CaddyTlsConnectionPolicy {
  match?: { sni?: string[]; [key: string]: unknown };
  certificate_selection?: {
    serial_number?: string[];
    subject_organization?: string[];
    public_key_algorithm?: string;
    any_tag?: string[];
    all_tags?: string[];
    [key: string]: unknown;
  };
  cipher_suites?: string[];
  curves?: string[];
  alpn?: string[];
  protocol_min?: string;
  protocol_max?: string;
  client_authentication?: Record<string, unknown>;
  default_sni?: string;
  [key: string]: unknown;
}

/**
 * A route: if any matcher set in `match` matches (all matchers within a set must), the handlers
 * in `handle` run in order. `@id` makes it addressable through `/id/<id>`.
 */
export interface CaddyRoute {
  '@id'?: string;
  group?: string;
  match?: CaddyMatcherSet[];
  handle?: CaddyHandler[];
  /** Stop after this route when it matched. */
  terminal?: boolean;
  [key: string]: unknown;
}

/** Matchers that must all match (AND); a route's `match` list is OR-ed. */
export interface CaddyMatcherSet {
  /** Host names, wildcards allowed in the leftmost label (`*.user1.example.com`). */
  host?: string[];
  /** Path patterns (`/api/*`). */
  path?: string[];
  path_regexp?: { name?: string; pattern: string };
  method?: string[];
  header?: Record<string, string[]>;
  query?: Record<string, string[]>;
  protocol?: string;
  remote_ip?: { ranges?: string[]; forwarded?: boolean };
  not?: CaddyMatcherSet[];
  [matcher: string]: unknown;
}

/** Any HTTP handler module; the typed ones are discriminated by `handler`. */
export type CaddyHandler =
  CaddyReverseProxyHandler | CaddySubrouteHandler | CaddyStaticResponseHandler | CaddyHeadersHandler | CaddyMapHandler | CaddyOtherHandler;

/** A handler module this subset does not type (`file_server`, `encode`, `rewrite` …). */
export interface CaddyOtherHandler {
  handler: string;
  [key: string]: unknown;
}

/** Header edits: `set` replaces, `add` appends, `delete` removes (names), `replace` substitutes in values. */
export interface CaddyHeaderOps {
  set?: Record<string, string[]>;
  add?: Record<string, string[]>;
  delete?: string[];
  replace?: Record<string, { search?: string; search_regexp?: string; replace?: string }[]>;
  [key: string]: unknown;
}

/** Response header edits, optionally deferred until the response is written. */
export interface CaddyResponseHeaderOps extends CaddyHeaderOps {
  deferred?: boolean;
  require?: { status_code?: number[]; headers?: Record<string, string[]> };
}

/** `reverse_proxy`: proxies to upstreams. WebSocket upgrades pass through without extra config. */
export interface CaddyReverseProxyHandler {
  handler: 'reverse_proxy';
  upstreams?: CaddyUpstream[];
  transport?: CaddyHttpTransport;
  load_balancing?: {
    selection_policy?: { policy: string; [key: string]: unknown };
    try_duration?: CaddyDuration;
    try_interval?: CaddyDuration;
    [key: string]: unknown;
  };
  health_checks?: { active?: Record<string, unknown>; passive?: Record<string, unknown>; [key: string]: unknown };
  headers?: { request?: CaddyHeaderOps; response?: CaddyResponseHeaderOps };
  /** `-1` streams responses immediately (SSE). */
  flush_interval?: CaddyDuration;
  trusted_proxies?: string[];
  handle_response?: Record<string, unknown>[];
  [key: string]: unknown;
}

/** One backend: `dial` is `host:port` (or `unix//path`). */
export interface CaddyUpstream {
  dial: string;
  max_requests?: number;
  [key: string]: unknown;
}

/** The `http` transport of `reverse_proxy`; `tls` present (even `{}`) means HTTPS to the upstream. */
export interface CaddyHttpTransport {
  protocol: 'http';
  tls?: CaddyTransportTls;
  dial_timeout?: CaddyDuration;
  response_header_timeout?: CaddyDuration;
  read_timeout?: CaddyDuration;
  write_timeout?: CaddyDuration;
  keep_alive?: { enabled?: boolean; idle_timeout?: CaddyDuration; max_idle_conns?: number; [key: string]: unknown };
  /** `["1.1", "2"]`, `["h2c", "2"]`. */
  versions?: string[];
  [key: string]: unknown;
}

/** TLS from Caddy to an upstream. */
export interface CaddyTransportTls {
  /** PEM files of CAs to trust for the upstream's certificate (instead of the system pool). */
  root_ca_pem_files?: string[];
  /** Base64 DER CA certificates to trust. */
  root_ca_pool?: string[];
  client_certificate_file?: string;
  client_certificate_key_file?: string;
  insecure_skip_verify?: boolean;
  /** SNI and verification name; may use placeholders such as `{http.reverse_proxy.upstream.hostport}`. */
  server_name?: string;
  handshake_timeout?: CaddyDuration;
  [key: string]: unknown;
}

/** `subroute`: a nested route list (how per-host route groups are built). */
export interface CaddySubrouteHandler {
  handler: 'subroute';
  routes?: CaddyRoute[];
  errors?: { routes?: CaddyRoute[] };
  [key: string]: unknown;
}

/** `static_response`: a fixed answer. */
export interface CaddyStaticResponseHandler {
  handler: 'static_response';
  /** A number, or a string so it can hold a placeholder. */
  status_code?: number | string;
  headers?: Record<string, string[]>;
  body?: string;
  close?: boolean;
  abort?: boolean;
  [key: string]: unknown;
}

/**
 * `map`: sets the placeholders named in `destinations` (`{name}`) from the value of `source` (a
 * placeholder) through `mappings`, evaluated when a destination is first read. Caddy 2.6 tries
 * the mappings in order (a linear scan, each `input` compared exactly, case included).
 */
export interface CaddyMapHandler {
  handler: 'map';
  source: string;
  destinations: string[];
  mappings?: { input?: string; input_regexp?: string; outputs: (string | null)[] }[];
  /** One per destination, used when no mapping matches. */
  defaults?: string[];
  [key: string]: unknown;
}

/** `headers`: edits request and/or response headers. */
export interface CaddyHeadersHandler {
  handler: 'headers';
  request?: CaddyHeaderOps;
  response?: CaddyResponseHeaderOps;
  [key: string]: unknown;
}

// ---------------------------------------------------------------------------------------------
// TLS app

/** `apps.tls`. */
export interface CaddyTlsApp {
  certificates?: CaddyCertificateLoaders;
  automation?: CaddyTlsAutomation;
  session_tickets?: Record<string, unknown>;
  cache?: { capacity?: number; [key: string]: unknown };
  disable_ocsp_stapling?: boolean;
  [key: string]: unknown;
}

/** Certificates loaded as they are (uploaded ones), rather than obtained by automation. */
export interface CaddyCertificateLoaders {
  /** Certificate and key as PEM text in the config. */
  load_pem?: { certificate: string; key: string; tags?: string[] }[];
  /** Certificate and key from files. */
  load_files?: { certificate: string; key: string; format?: 'pem'; tags?: string[] }[];
  load_folders?: string[];
  /** Names to manage with automation even if no server uses them. */
  automate?: string[];
  [key: string]: unknown;
}

/** Certificate automation: the first policy whose `subjects` match a name applies. */
export interface CaddyTlsAutomation {
  policies?: CaddyAutomationPolicy[];
  on_demand?: Record<string, unknown>;
  ocsp_interval?: CaddyDuration;
  renew_interval?: CaddyDuration;
  storage_clean_interval?: CaddyDuration;
  [key: string]: unknown;
}

/** One automation policy. */
export interface CaddyAutomationPolicy {
  /** Names this policy covers (wildcards allowed); none means every name not covered elsewhere. */
  subjects?: string[];
  /** Tried in order until one issues. */
  issuers?: CaddyIssuer[];
  on_demand?: boolean;
  key_type?: string;
  must_staple?: boolean;
  renewal_window_ratio?: number;
  storage?: { module: string; [key: string]: unknown };
  [key: string]: unknown;
}

/** A certificate issuer module. */
export type CaddyIssuer = CaddyInternalIssuer | CaddyAcmeIssuer | CaddyOtherIssuer;

/** Self-signed certificates from a CA of the PKI app (`local` by default). */
export interface CaddyInternalIssuer {
  module: 'internal';
  /** PKI app CA id; default `local`. */
  ca?: string;
  lifetime?: CaddyDuration;
  sign_with_root?: boolean;
  [key: string]: unknown;
}

/** An ACME CA (Let's Encrypt, or pebble in tests). */
export interface CaddyAcmeIssuer {
  module: 'acme';
  /** ACME directory URL (default Let's Encrypt production). */
  ca?: string;
  test_ca?: string;
  email?: string;
  /** PEM files of roots to trust for the ACME server's own HTTPS (pebble's CA). */
  trusted_roots_pem_files?: string[];
  account_key?: string;
  external_account?: { key_id: string; mac_key: string };
  acme_timeout?: CaddyDuration;
  challenges?: {
    http?: { disabled?: boolean; alternate_port?: number };
    'tls-alpn'?: { disabled?: boolean; alternate_port?: number };
    dns?: Record<string, unknown>;
    bind_host?: string;
    [key: string]: unknown;
  };
  preferred_chains?: Record<string, unknown>;
  [key: string]: unknown;
}

/** An issuer module this subset does not type (`zerossl` …). */
export interface CaddyOtherIssuer {
  module: string;
  [key: string]: unknown;
}

// ---------------------------------------------------------------------------------------------
// PKI app

/** `apps.pki`: the CAs behind the internal issuer. */
export interface CaddyPkiApp {
  certificate_authorities?: Record<string, CaddyCertificateAuthority>;
  [key: string]: unknown;
}

/** One internal CA. */
export interface CaddyCertificateAuthority {
  name?: string;
  root_common_name?: string;
  intermediate_common_name?: string;
  intermediate_lifetime?: CaddyDuration;
  /** Whether Caddy installs its root into the system trust store (default true; set false on servers). */
  install_trust?: boolean;
  root?: { certificate: string; private_key?: string; format?: string };
  intermediate?: { certificate: string; private_key?: string; format?: string };
  storage?: { module: string; [key: string]: unknown };
  [key: string]: unknown;
}
