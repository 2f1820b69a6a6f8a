// NATS credentials files, parsed without the NATS client so that the agent and the controller share one
// reader and its error messages. Secrets never appear in an error: only the file name and what is wrong.
import { readFile } from 'node:fs/promises';
import { BulkheadError } from './errors.js';

/** What a credentials file holds; each kind maps to one of the client's authenticators. */
export type NatsCredentials =
  | { readonly kind: 'user-password'; readonly user: string; readonly password: string }
  | { readonly kind: 'nkey'; readonly seed: string }
  | { readonly kind: 'creds'; readonly jwt: string; readonly seed: string };

/** A credentials file that cannot be used: its `message` names the file, never the secret. */
export class CredentialsError extends BulkheadError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('CREDENTIALS_INVALID', message, options);
  }
}

// A user seed: "SU" then base32 (an nkey seed is 58 characters: prefix bytes, 32-byte key, CRC).
const USER_SEED_RE = /^SU[A-Z2-7]{56}$/;
// JWTs are three base64url parts; the server verifies the signature, we only check the shape.
const JWT_RE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
// The blocks of a `nsc`-generated .creds file: `-----BEGIN NATS USER JWT-----` … `------END NATS USER JWT------`.
const BLOCK_RE = /-{3,}\s*BEGIN ([A-Z ]+?)\s*-{3,}\s*\r?\n\s*(\S+)\s*\r?\n\s*-{3,}\s*END [A-Z ]+?\s*-{3,}/g;

/** Parses the text of a credentials file: `user:password`, an `SU…` nkey seed, or a .creds (JWT + seed). */
export function parseNatsCredentials(text: string, label: string): NatsCredentials {
  if (text.includes('BEGIN')) return parseCredsFile(text, label);
  const lines = text.split(/\r?\n/).filter((line) => line.trim() !== '' && !line.trimStart().startsWith('#'));
  if (lines.length !== 1) {
    throw new CredentialsError(
      `${label}: expected one line (user:password or an SU… nkey seed) or a .creds file, found ${lines.length} non-comment lines`,
    );
  }
  const line = lines[0]!;
  const seed = line.trim();
  if (seed.startsWith('SU') && !seed.includes(':')) {
    if (!USER_SEED_RE.test(seed)) throw new CredentialsError(`${label}: the nkey seed is malformed (expected SU followed by 56 base32 characters)`);
    return { kind: 'nkey', seed };
  }
  const colon = line.indexOf(':');
  if (colon < 0) throw new CredentialsError(`${label}: expected user:password or an SU… nkey seed`);
  // The password is everything after the first colon, byte for byte: it may itself contain colons or spaces.
  const user = line.slice(0, colon).trim();
  const password = line.slice(colon + 1);
  if (user === '' || /\s/.test(user)) throw new CredentialsError(`${label}: the user name before ":" is empty or contains spaces`);
  if (password === '') throw new CredentialsError(`${label}: the password after "${user}:" is empty`);
  return { kind: 'user-password', user, password };
}

function parseCredsFile(text: string, label: string): NatsCredentials {
  let jwt: string | undefined;
  let seed: string | undefined;
  for (const match of text.matchAll(BLOCK_RE)) {
    const kind = match[1]!;
    if (kind.endsWith('JWT')) jwt ??= match[2];
    else if (kind.endsWith('SEED')) seed ??= match[2];
  }
  if (jwt === undefined) throw new CredentialsError(`${label}: a .creds file needs a BEGIN NATS USER JWT block`);
  if (seed === undefined) throw new CredentialsError(`${label}: a .creds file needs a BEGIN USER NKEY SEED block`);
  if (!JWT_RE.test(jwt)) throw new CredentialsError(`${label}: the JWT block is not a JWT`);
  if (!USER_SEED_RE.test(seed)) throw new CredentialsError(`${label}: the seed block is not a user nkey seed (SU…)`);
  return { kind: 'creds', jwt, seed };
}

/** Reads and parses a credentials file; throws CredentialsError naming the file. */
export async function readNatsCredentials(path: string): Promise<NatsCredentials> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'unknown error';
    throw new CredentialsError(`${path}: cannot read the credentials file (${code})`, { cause: err });
  }
  return parseNatsCredentials(text, path);
}

/** A description safe for logs: the kind and the user or public part, never the secret. */
export function describeCredentials(credentials: NatsCredentials | undefined): string {
  if (credentials === undefined) return 'none';
  switch (credentials.kind) {
    case 'user-password':
      return `user ${credentials.user}`;
    case 'nkey':
      return 'nkey seed';
    case 'creds':
      return 'JWT + nkey seed';
  }
}
