import fs from 'node:fs';
import path from 'node:path';
import { sql } from 'kysely';
import { createDatabase } from '../../shared/db/database';

/**
 * Drop a test database made by BACKENDS' `makeUrl`: the Postgres schema named in the URL, or
 * the SQLite file's private directory. Close the test's own handles first.
 */
export async function disposeTestDatabase(url: string): Promise<void> {
  if (url.startsWith('sqlite:')) {
    fs.rmSync(path.dirname(url.slice('sqlite:'.length)), { recursive: true, force: true });
    return;
  }
  const u = new URL(url);
  const schema = u.searchParams.get('schema');
  u.searchParams.delete('schema');
  if (schema === null) return;
  const admin = await createDatabase(u.toString());
  try {
    await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(admin.db);
  } finally {
    await admin.close();
  }
}
