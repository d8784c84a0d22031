import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Router } from 'express';
import type { Clock } from '../../shared/clock';
import type { Config } from '../../shared/config';
import { backupView, createBackupBodySchema, verifyBackupBodySchema } from '../../shared/contract/backups';
import { uuidParamSchema } from '../../shared/contract/common';
import { getBackup, listBackups, type BackupRow } from '../../shared/db/backups-store';
import type { DatabaseHandle } from '../../shared/db/database';
import { ConflictError, NotFoundError } from '../../shared/errors';
import type { Logger } from '../../shared/logger';
import { requestBackup, requestBackupVerification } from '../../queues/backup-producer';
import type { Queues } from '../../queues/producer';
import { requireScope } from '../middleware/auth';
import { idempotency } from '../middleware/idempotency';
import { getById, listNewestFirst } from '../read-handlers';
import { methodNotAllowed } from '../middleware/not-found';
import { validate, validated } from '../middleware/validate';

export interface BackupsRouteDeps {
  config: Config;
  db: DatabaseHandle;
  queues: Queues;
  clock: Clock;
  logger: Logger;
  afterCommit?: () => void | Promise<void>;
}

const createSchemas = { body: createBackupBodySchema };
const oneSchemas = { params: uuidParamSchema };
const verifySchemas = { params: uuidParamSchema, body: verifyBackupBodySchema };

const location = (id: string) => `/v1/backups/${id}`;
const accepted = (row: BackupRow) => ({ status: 202, body: backupView(row), location: location(row.id) });

/** DESIGN.md §5: POST/GET /v1/backups, GET /v1/backups/:id, download (admin), verify. */
export function backupsRouter(deps: BackupsRouteDeps): Router {
  const router = Router();
  const db = deps.db.db;
  const keyed = idempotency({ db, config: deps.config, clock: deps.clock }, { required: true });
  const producer = (logger: Logger) => ({
    db,
    queues: deps.queues,
    clock: deps.clock,
    logger,
    afterCommit: deps.afterCommit,
  });

  router
    .route('/v1/backups')
    .post(requireScope('write'), validate(createSchemas), keyed, async (req, res) => {
      const { body } = validated(req, createSchemas);
      const { response } = await requestBackup(producer(req.log), {
        label: body.label ?? null,
        claim: req.idempotency,
        respond: accepted,
      });
      res.status(response.status).location(response.location!).json(response.body);
    })
    .get(...listNewestFirst((o) => listBackups(db, o), backupView))
    .all(methodNotAllowed(['GET', 'POST']));

  router
    .route('/v1/backups/:id')
    .get(...getById('backup', (id) => getBackup(db, id), backupView))
    .all(methodNotAllowed(['GET']));

  router
    .route('/v1/backups/:id/download')
    .get(requireScope('admin'), validate(oneSchemas), async (req, res) => {
      const { params } = validated(req, oneSchemas);
      const row = await getBackup(db, params.id);
      if (!row) throw new NotFoundError(`There is no backup with id ${params.id}.`);
      if (row.status !== 'succeeded' || !row.file_name) {
        throw new ConflictError(
          `Backup ${params.id} is ${row.status}; only a succeeded backup has an archive.`,
        );
      }
      const file = path.join(deps.config.BACKUP_DIR, path.basename(row.file_name));
      let stat: fs.Stats;
      try {
        stat = await fs.promises.stat(file);
      } catch {
        throw new NotFoundError(`The archive of backup ${params.id} is no longer on disk (pruned or moved).`);
      }
      if (row.size_bytes !== null && stat.size !== Number(row.size_bytes)) {
        throw new ConflictError(
          `The archive of backup ${params.id} is ${stat.size} bytes on disk, but the backup wrote ${row.size_bytes}: it was changed after it was written, so it is not served. Verify the backup (POST /v1/backups/${params.id}/verify) to record the damage, and make a new backup.`,
        );
      }
      res.setHeader('Content-Type', 'application/gzip');
      res.setHeader('Content-Length', String(stat.size));
      res.setHeader('Content-Disposition', `attachment; filename="${path.basename(row.file_name)}"`);
      if (row.sha256) {
        const b64 = Buffer.from(row.sha256, 'hex').toString('base64');
        res.setHeader('Digest', `sha-256=${b64}`); // RFC 3230, for older clients
        res.setHeader('Repr-Digest', `sha-256=:${b64}:`); // RFC 9530
      }
      try {
        const source = fs.createReadStream(file);
        await (row.sha256
          ? pipeline(source, holdLastChunkUntilDigestMatches(row.sha256), res)
          : pipeline(source, res));
      } catch (err) {
        // The client went away mid-download: its choice, not a server failure.
        if ((err as NodeJS.ErrnoException).code === 'ERR_STREAM_PREMATURE_CLOSE') {
          req.log.info({ backup_id: params.id }, 'backup download ended by the client before the end');
          return;
        }
        if (err instanceof ArchiveChangedError) {
          // The status line went out long ago; cutting the body short is how the client learns.
          req.log.error(
            { backup_id: params.id, err },
            'backup download aborted: the archive changed on disk',
          );
          res.destroy();
          return;
        }
        throw err;
      }
    })
    .all(methodNotAllowed(['GET']));

  router
    .route('/v1/backups/:id/verify')
    .post(requireScope('write'), validate(verifySchemas), keyed, async (req, res) => {
      const { params } = validated(req, verifySchemas);
      const { response } = await requestBackupVerification(producer(req.log), {
        backupId: params.id,
        claim: req.idempotency,
        respond: accepted,
      });
      res.status(response.status).location(response.location!).json(response.body);
    })
    .all(methodNotAllowed(['POST']));

  return router;
}

class ArchiveChangedError extends Error {}

/**
 * Passes the archive through, hashing it, and holds each chunk back until the next one
 * arrives: the last chunk goes out only if the whole file has the sha256 the backup recorded.
 * A file of the right size but other bytes (damaged on disk) thus never reaches the client
 * whole; its download ends short of Content-Length instead.
 */
function holdLastChunkUntilDigestMatches(expectedHex: string): Transform {
  const hash = createHash('sha256');
  let held: Buffer | undefined;
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      const out = held;
      held = chunk;
      done(null, out);
    },
    flush(done) {
      const actual = hash.digest('hex');
      if (actual !== expectedHex) {
        done(new ArchiveChangedError(`archive has sha256 ${actual}, the backup recorded ${expectedHex}`));
        return;
      }
      done(null, held);
    },
  });
}
