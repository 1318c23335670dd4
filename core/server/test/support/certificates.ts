/** Self-signed test certificates made with the openssl CLI (argument arrays, a temporary folder). */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A certificate for `names` (the first is the subject), valid for `days`; `expired` makes one valid only in January 2020. */
export function selfSignedCertificate(names: string[], days = 30, expired = false): { certificatePem: string; privateKeyPem: string } {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-cert-'));
  try {
    const key = join(dir, 'key.pem');
    const cert = join(dir, 'cert.pem');
    const san = `subjectAltName=${names.map((n) => `DNS:${n}`).join(',')}`;
    const keyArgs = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-subj', `/CN=${names[0]}`, '-addext', san];
    if (!expired) {
      execFileSync('openssl', ['req', '-x509', ...keyArgs, '-out', cert, '-days', String(days)], { stdio: 'ignore' });
    } else {
      // openssl 3.0's req cannot back-date a certificate; its ca command can
      const csr = join(dir, 'req.csr');
      execFileSync('openssl', ['req', ...keyArgs, '-out', csr], { stdio: 'ignore' });
      writeFileSync(join(dir, 'index.txt'), '');
      writeFileSync(join(dir, 'serial'), '01\n');
      const config = join(dir, 'ca.cnf');
      writeFileSync(
        config,
        `[ca]\ndefault_ca=d\n[d]\ndatabase=${dir}/index.txt\nserial=${dir}/serial\nnew_certs_dir=${dir}\ndefault_md=sha256\npolicy=p\ncopy_extensions=copy\n[p]\ncommonName=supplied\n`,
      );
      execFileSync(
        'openssl',
        [
          'ca',
          '-batch',
          '-config',
          config,
          '-selfsign',
          '-keyfile',
          key,
          '-in',
          csr,
          '-out',
          cert,
          '-startdate',
          '20200101000000Z',
          '-enddate',
          '20200201000000Z',
        ],
        {
          stdio: 'ignore',
        },
      );
    }
    return { certificatePem: readFileSync(cert, 'utf8'), privateKeyPem: readFileSync(key, 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
