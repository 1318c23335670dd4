/**
 * A real ACME round trip: Caddy gets a certificate for a test domain from pebble (HTTP-01, validated by pebble against Caddy's HTTP port), serves it,
 * and the certificate verifies against pebble's issuing root and nothing else.
 */
import { existsSync, readFileSync } from 'node:fs';
import { request } from 'node:https';
import { connect as netConnect } from 'node:net';
import { connect, type DetailedPeerCertificate } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CaddyConfig } from '../src/index.js';
import { caddyAvailable, freePort, pebbleAvailable, startCaddy, startPebble, type CaddyProcess, type PebbleProcess } from '../src/testing.js';

const REQUIRE_SYSTEM = process.env.GATEHOUSE_REQUIRE_SYSTEM === '1';
const available = (await caddyAvailable()) && (await pebbleAvailable());

const DOMAIN = 'acme.gatehouse.test';

interface Handshake {
  cert: DetailedPeerCertificate;
  chain: X509Certificate[];
  authorized: boolean;
  authorizationError?: string;
}

/** One TLS handshake with 127.0.0.1:port for `servername`; never rejects the certificate, reports whether it verified against `ca` (default: Node's roots). */
function handshake(port: number, servername: string, ca?: string): Promise<Handshake> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, servername, ca, rejectUnauthorized: false, timeout: 5000 }, () => {
      const cert = socket.getPeerCertificate(true);
      // the served chain, leaf first (Node links a self-signed certificate to itself, so stop at a repeat)
      const chain: X509Certificate[] = [];
      for (let c: DetailedPeerCertificate | undefined = cert; c?.raw && !chain.some((x) => x.raw.equals(c!.raw)); c = c.issuerCertificate) {
        chain.push(new X509Certificate(c.raw));
      }
      const authorizationError = socket.authorizationError ? String(socket.authorizationError) : undefined;
      resolve({ cert, chain, authorized: socket.authorized, authorizationError });
      socket.end();
    });
    socket.on('timeout', () => socket.destroy(new Error('TLS handshake timed out')));
    socket.on('error', reject);
  });
}

/** An HTTPS GET to 127.0.0.1:port as `host`, trusting only `ca`. */
function httpsGet(port: number, host: string, ca: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, servername: host, headers: { host }, path: '/', ca, agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('GET timed out')));
    req.on('error', reject);
    req.end();
  });
}

describe.skipIf(!available && !REQUIRE_SYSTEM)('against real pebble and Caddy: a certificate by ACME HTTP-01', () => {
  let pebble: PebbleProcess | undefined;
  let caddy: CaddyProcess | undefined;
  let httpsPort: number;

  beforeAll(async () => {
    const httpPort = await freePort();
    httpsPort = await freePort();
    pebble = await startPebble({ httpPort });
    const config: CaddyConfig = {
      apps: {
        http: {
          http_port: httpPort,
          https_port: httpsPort,
          servers: {
            web: {
              listen: [`127.0.0.1:${httpPort}`, `127.0.0.1:${httpsPort}`],
              routes: [{ match: [{ host: [DOMAIN] }], handle: [{ handler: 'static_response', body: 'hello over acme' }], terminal: true }],
            },
          },
        },
        // The host route alone makes Caddy manage the name (automatic HTTPS). Not also `certificates.automate`: Caddy 2.6.2 then starts two obtains
        // at once, its file-storage lock can let both through (a lock file read before it is written counts as stale), and the two HTTP-01 tokens
        // collide, failing one order. And `automate` without a host route gets the certificate but serves no TLS on the HTTPS port.
        tls: {
          automation: {
            policies: [
              {
                subjects: [DOMAIN],
                issuers: [
                  { module: 'acme', ca: pebble.directoryUrl, trusted_roots_pem_files: [pebble.caCertFile], challenges: { 'tls-alpn': { disabled: true } } },
                ],
              },
            ],
          },
        },
      },
    };
    caddy = await startCaddy({ config });
  }, 30_000);
  afterAll(async () => {
    await Promise.all([caddy?.stop(), pebble?.stop()]);
  });

  it('Caddy serves a certificate for the domain that verifies against pebble’s root', async () => {
    const started = Date.now();
    let served: Handshake | undefined;
    let lastError: unknown;
    while (!served && Date.now() - started < 30_000) {
      try {
        const attempt = await handshake(httpsPort, DOMAIN);
        if (attempt.cert.subjectaltname?.split(', ').includes(`DNS:${DOMAIN}`)) served = attempt;
        else lastError = new Error(`served ${attempt.cert.subjectaltname}`);
      } catch (error) {
        lastError = error; // no certificate yet: Caddy ends the handshake
      }
      if (!served) await new Promise((resolve) => setTimeout(resolve, 200));
    }
    if (!served) throw new Error(`no certificate for ${DOMAIN} after 30 s: ${String(lastError)}\n--- caddy ---\n${caddy!.log()}\n${pebble!.log()}`);

    const roots = await pebble!.issuerRootsPem();
    const root = new X509Certificate(roots);
    const [leaf, ...issuers] = served.chain;
    expect(leaf!.checkHost(DOMAIN)).toBe(DOMAIN);
    expect(leaf!.ca).toBe(false);
    // the served chain leads to pebble's root: each certificate is signed by the next, the last by the root
    for (const [i, cert] of served.chain.entries()) {
      const issuer = served.chain[i + 1] ?? root;
      expect(cert.checkIssued(issuer)).toBe(true);
      expect(cert.verify(issuer.publicKey)).toBe(true);
    }
    expect(issuers.length).toBeGreaterThan(0); // pebble's intermediate, served by Caddy

    // and TLS verification agrees: trusted with pebble's root, not with Node's roots or the CA of pebble's own listener
    expect(await handshake(httpsPort, DOMAIN, roots)).toMatchObject({ authorized: true });
    expect(await handshake(httpsPort, DOMAIN)).toMatchObject({ authorized: false });
    expect(await handshake(httpsPort, DOMAIN, readFileSync(pebble!.caCertFile, 'utf8'))).toMatchObject({ authorized: false });
    expect(await httpsGet(httpsPort, DOMAIN, roots)).toEqual({ status: 200, body: 'hello over acme' });
    // pebble really validated: an HTTP-01 fetch from Caddy's HTTP port (nothing like PEBBLE_VA_ALWAYS_VALID)
    expect(pebble!.log()).toContain(`Attempting to validate w/ HTTP: http://${DOMAIN}:${pebble!.httpPort}/.well-known/acme-challenge/`);
    expect(pebble!.log()).toMatch(/authz \S+ set VALID by completed challenge/);
    console.log(`certificate for ${DOMAIN} served after ${Date.now() - started} ms of polling`);
  }, 60_000);
});

describe.skipIf(!available && !REQUIRE_SYSTEM)('a pebble that has stopped', () => {
  let pebble: PebbleProcess | undefined;
  afterAll(async () => {
    await pebble?.stop();
  });

  it('stop() ends both processes and removes the temp dir', async () => {
    pebble = await startPebble({ httpPort: await freePort() });
    expect(existsSync(pebble.caCertFile)).toBe(true);
    expect(await pebble.issuerRootsPem()).toContain('-----BEGIN CERTIFICATE-----');
    await pebble.stop();
    await pebble.stop(); // twice is fine
    expect(existsSync(pebble.caCertFile)).toBe(false);
    // nothing listens on the directory's port any more
    const port = Number(new URL(pebble.directoryUrl).port);
    const refused = await new Promise<unknown>((resolve) =>
      netConnect(port, '127.0.0.1')
        .once('error', resolve)
        .once('connect', () => resolve('connected')),
    );
    expect(refused).toMatchObject({ code: 'ECONNREFUSED' });
  }, 30_000);
});
