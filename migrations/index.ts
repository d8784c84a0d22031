import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { Migration } from '../shared/db/migrate';

/** `NNNN_name.ts`: four digits, then lower-case words joined by underscores. */
const MIGRATION_FILE = /^(\d{4})_[a-z0-9]+(?:_[a-z0-9]+)*\.ts$/;

/**
 * Every migration in this folder, in order. A migration's checksum is the SHA-256 of its
 * file's source text, so editing an applied migration is detected at start.
 * @throws Error when numbers repeat or skip, or a file does not export `up`.
 */
export async function loadMigrations(): Promise<Migration[]> {
  const dir = new URL('./', import.meta.url);
  const files = (await fs.readdir(fileURLToPath(dir))).filter((f) => MIGRATION_FILE.test(f)).sort();
  const migrations: Migration[] = [];
  for (const [i, file] of files.entries()) {
    const number = Number(MIGRATION_FILE.exec(file)?.[1]);
    if (number !== i + 1) {
      throw new Error(
        `migration ${file} should be numbered ${String(i + 1).padStart(4, '0')}: numbers run 0001, 0002, … without gaps`,
      );
    }
    const url = new URL(file, dir);
    // Line endings are normalised so a checkout with CRLF does not look like an edit.
    const source = (await fs.readFile(url, 'utf8')).replace(/\r\n/g, '\n');
    const mod = (await import(url.href)) as { up?: Migration['up'] };
    if (typeof mod.up !== 'function') throw new Error(`migration ${file} does not export up(db, dialect)`);
    migrations.push({
      name: file.slice(0, -'.ts'.length),
      checksum: createHash('sha256').update(source).digest('hex'),
      up: mod.up,
    });
  }
  return migrations;
}
