/**
 * What certificate Caddy really serves for a name: a TLS handshake with the proxy's HTTPS
 * listener, SNI set to the name, no verification (self-signed and staging chains are expected).
 */
import { connect } from 'node:tls';

/** The leaf certificate served for a name. */
export interface ServedCertificate {
  issuer: string;
  subject: string;
  /** DNS names of the certificate, e.g. `DNS:shop.example.com`. */
  subjectAltName: string;
  notBefore: Date;
  notAfter: Date;
  serialNumber: string;
}

/** The name to send as SNI for a domain: a wildcard is probed with a name only it covers. */
export function sniFor(domain: string): string {
  return domain.startsWith('*.') ? `gatehouse-probe${domain.slice(1)}` : domain;
}

/** Handshakes with host:port as `servername`; resolves the served certificate, or rejects with the TLS error. */
export function servedCertificate(host: string, port: number, servername: string, timeoutMs = 5000): Promise<ServedCertificate> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, servername, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] });
    const timer = setTimeout(() => socket.destroy(new Error(`no TLS handshake with ${host}:${port} for ${servername} within ${timeoutMs} ms`)), timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      const cert = socket.getPeerCertificate();
      socket.destroy();
      if (!cert || !cert.valid_to) return reject(new Error(`${host}:${port} served no certificate for ${servername}`));
      resolve({
        issuer: formatName(cert.issuer),
        subject: formatName(cert.subject),
        subjectAltName: cert.subjectaltname ?? '',
        notBefore: new Date(cert.valid_from),
        notAfter: new Date(cert.valid_to),
        serialNumber: cert.serialNumber,
      });
    });
    socket.once('error', (error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(error);
    });
  });
}

function formatName(name: object | undefined): string {
  if (!name) return '';
  return Object.entries(name as Record<string, string | string[] | undefined>)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join('+') : v!}`)
    .join(', ');
}

/** Whether a served certificate names the domain (exactly, or by a wildcard one label deep). */
export function certificateCovers(cert: ServedCertificate, domain: string): boolean {
  const names = cert.subjectAltName
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.startsWith('DNS:'))
    .map((s) => s.slice(4).toLowerCase());
  const wanted = sniFor(domain);
  return names.some((n) => n === domain || n === wanted || (n.startsWith('*.') && wanted.slice(wanted.indexOf('.')) === n.slice(1)));
}
