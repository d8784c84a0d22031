import type { Kysely } from 'kysely';
import type { Dialect } from '../shared/db/database';

/**
 * When `taskyard restore` brought a backup's row in from another install. Its archive file
 * belongs to that install (often in the same BACKUP_DIR): retention deletes such a row but
 * never its file, or the install it came from would lose an archive it still lists.
 */
export async function up(db: Kysely<any>, _dialect: Dialect): Promise<void> {
  await db.schema.alterTable('backups').addColumn('imported_at', 'bigint').execute();
}
