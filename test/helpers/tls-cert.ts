// Throwaway self-signed certificates for TLS test servers, made by the real openssl so nothing is checked in.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findExecutable } from './need.js';

/** The openssl executable, or undefined (callers skip or fail via `unavailable`). */
export const openssl = findExecutable('openssl');

/** A fresh RSA key and a two-day self-signed certificate for `cn` (also its DNS subjectAltName), PEM-encoded. */
export function selfSignedCert(cn: string): { key: string; cert: string } {
  if (!openssl) throw new Error('openssl is not on PATH');
  const dir = mkdtempSync(join(tmpdir(), 'bulkhead-cert-'));
  try {
    const keyPath = join(dir, 'key.pem');
    const certPath = join(dir, 'cert.pem');
    execFileSync(
      openssl,
      ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${cn}`, '-days', '2',
        '-addext', `subjectAltName=DNS:${cn}`, '-keyout', keyPath, '-out', certPath],
      { stdio: ['ignore', 'ignore', 'pipe'], timeout: 20_000 },
    );
    return { key: readFileSync(keyPath, 'utf8'), cert: readFileSync(certPath, 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
