// Reading the secrets a plan refers to (SPEC §9): never written in the plan, only named there as an environment
// variable or a file. Errors say where the secret was looked for, never what it is.
import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { BulkheadError } from './errors.js';
import type { SecretRef } from './plan.js';

export type SecretErrorCode = 'SECRET_UNSET' | 'SECRET_EMPTY' | 'SECRET_UNREADABLE';

/** A secret reference that does not yield a value. The message names the variable or file and nothing read from it. */
export class SecretError extends BulkheadError {
  constructor(code: SecretErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** Where a file reference points: absolute as written, or relative to the plan file's directory. */
export function secretPath(file: string, baseDir: string): string {
  return isAbsolute(file) ? file : resolve(baseDir, file);
}

/** Words naming a reference in messages: `environment variable X` or `file /abs/path`. */
export function describeSecretRef(ref: SecretRef, baseDir: string): string {
  return 'env' in ref ? `environment variable ${ref.env}` : `file ${secretPath(ref.file, baseDir)}`;
}

/**
 * The value a reference names: the environment variable (set and non-empty) or the file's content, read
 * synchronously, with one trailing newline (LF or CR LF) removed because editors and `echo` add one.
 */
export function readSecret(ref: SecretRef, baseDir: string, env: NodeJS.ProcessEnv = process.env): string {
  if ('env' in ref) {
    const value = env[ref.env];
    if (value === undefined) throw new SecretError('SECRET_UNSET', `environment variable ${ref.env} is not set`);
    if (value === '') throw new SecretError('SECRET_EMPTY', `environment variable ${ref.env} is empty`);
    return value;
  }
  const path = secretPath(ref.file, baseDir);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    // Only the code: an fs error's message is safe, but nothing from the read belongs in ours.
    const code = (err as NodeJS.ErrnoException).code ?? 'unknown error';
    throw new SecretError('SECRET_UNREADABLE', `cannot read secret file ${path} (${code})`, { cause: err });
  }
  const value = text.replace(/\r?\n$/, '');
  if (value === '') throw new SecretError('SECRET_EMPTY', `secret file ${path} is empty`);
  return value;
}
