import { writeBackupArchive } from '../../shared/backup-archive-writer';

/**
 * Child process for memory tests: `node --import tsx tests/helpers/backup-child.ts <url> <dir> <file>`
 * writes one backup archive and prints one JSON line: the result and the process's peak RSS
 * (`process.resourceUsage().maxRSS`, in kilobytes).
 */
const [url, dir, fileName] = process.argv.slice(2);
if (url === undefined || dir === undefined || fileName === undefined) {
  console.error('usage: backup-child.ts <database-url> <dir> <file-name>');
  process.exit(64);
}
const result = await writeBackupArchive(url, { dir, fileName });
console.log(JSON.stringify({ result, maxRssKb: process.resourceUsage().maxRSS }));
