import type { Kysely } from 'kysely';
import type { Database } from './schema';

/** Settings: small JSON documents by key (e.g. the wanted schedules), written whole. */

/** The setting's parsed JSON value, or undefined when it was never written. */
export async function getSetting<T>(db: Kysely<Database>, key: string): Promise<T | undefined> {
  const row = await db.selectFrom('settings').select('value').where('key', '=', key).executeTakeFirst();
  return row === undefined ? undefined : (JSON.parse(row.value) as T);
}

/**
 * Write a setting, replacing any previous value, in one statement (INSERT … ON CONFLICT DO UPDATE),
 * so concurrent writers leave one row holding one of their values.
 * @throws TypeError when the value has no JSON form (undefined, a function).
 */
export async function putSetting(
  db: Kysely<Database>,
  key: string,
  value: unknown,
  now: number,
): Promise<void> {
  const json = JSON.stringify(value) as string | undefined;
  if (json === undefined) throw new TypeError(`setting "${key}" has no JSON form`);
  await db
    .insertInto('settings')
    .values({ key, value: json, updated_at: now })
    .onConflict((oc) =>
      oc.column('key').doUpdateSet((eb) => ({
        value: eb.ref('excluded.value'),
        updated_at: eb.ref('excluded.updated_at'),
      })),
    )
    .execute();
}
