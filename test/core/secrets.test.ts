import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readSecret, SecretError } from '../../core/secrets.js';

const dir = mkdtempSync(join(tmpdir(), 'bulkhead-secrets-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Writes `content` at `name` under the test directory and returns its absolute path. */
function file(name: string, content: string): string {
  const path = join(dir, name);
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, content);
  return path;
}

/** The SecretError `fn` throws (failing the test when it throws nothing or something else). */
function secretError(fn: () => unknown): SecretError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(SecretError);
    return err as SecretError;
  }
  throw new Error('expected a SecretError, nothing was thrown');
}

describe('readSecret from an environment variable', () => {
  it('returns the value exactly, whitespace included', () => {
    expect(readSecret({ env: 'PD_KEY' }, dir, { PD_KEY: ' R0123456789abcdef\n' })).toBe(' R0123456789abcdef\n');
  });

  it('reads process.env when no environment is passed', () => {
    process.env.BULKHEAD_TEST_SECRET_READ = 'from-process-env';
    try {
      expect(readSecret({ env: 'BULKHEAD_TEST_SECRET_READ' }, dir)).toBe('from-process-env');
    } finally {
      delete process.env.BULKHEAD_TEST_SECRET_READ;
    }
  });

  it('refuses an unset variable, naming it', () => {
    const err = secretError(() => readSecret({ env: 'BULKHEAD_PD_KEY' }, dir, { OTHER: 'x' }));
    expect(err.code).toBe('SECRET_UNSET');
    expect(err.message).toBe('environment variable BULKHEAD_PD_KEY is not set');
  });

  it('refuses an empty variable', () => {
    const err = secretError(() => readSecret({ env: 'BULKHEAD_PD_KEY' }, dir, { BULKHEAD_PD_KEY: '' }));
    expect(err.code).toBe('SECRET_EMPTY');
    expect(err.message).toBe('environment variable BULKHEAD_PD_KEY is empty');
  });
});

describe('readSecret from a file', () => {
  it('resolves a relative path against the base directory (the plan file directory)', () => {
    file('plans/secrets/pd-key', 'relative-key');
    expect(readSecret({ file: 'secrets/pd-key' }, join(dir, 'plans'), {})).toBe('relative-key');
    expect(readSecret({ file: '../plans/secrets/pd-key' }, join(dir, 'other'), {})).toBe('relative-key');
  });

  it('takes an absolute path as written, whatever the base directory', () => {
    const path = file('abs-key', 'absolute-key');
    expect(readSecret({ file: path }, '/nonexistent-base', {})).toBe('absolute-key');
  });

  it.each([
    ['one LF', 'key-value\n', 'key-value'],
    ['one CR LF', 'key-value\r\n', 'key-value'],
    ['only the last of two newlines', 'key-value\n\n', 'key-value\n'],
    ['nothing when there is no newline', 'key-value', 'key-value'],
    ['nothing but the newline: inner lines stay', 'line1\nline2\n', 'line1\nline2'],
  ])('strips %s', (_name, content, expected) => {
    file('newline-key', content);
    expect(readSecret({ file: 'newline-key' }, dir, {})).toBe(expected);
  });

  it('refuses a missing file, naming its absolute path and the error code', () => {
    const err = secretError(() => readSecret({ file: 'missing/key' }, dir, {}));
    expect(err.code).toBe('SECRET_UNREADABLE');
    expect(err.message).toBe(`cannot read secret file ${join(dir, 'missing/key')} (ENOENT)`);
    expect((err.cause as NodeJS.ErrnoException).code).toBe('ENOENT');
  });

  it('refuses a directory', () => {
    const err = secretError(() => readSecret({ file: dir }, '/', {}));
    expect(err.message).toBe(`cannot read secret file ${dir} (EISDIR)`);
  });

  it.each([
    ['empty', ''],
    ['only a newline', '\n'],
    ['only a CR LF', '\r\n'],
  ])('refuses a file that is %s', (_name, content) => {
    const path = file('empty-key', content);
    const err = secretError(() => readSecret({ file: 'empty-key' }, dir, {}));
    expect(err.code).toBe('SECRET_EMPTY');
    expect(err.message).toBe(`secret file ${path} is empty`);
  });
});
