/**
 * An outside process holding the service's SQLite write lock, as a backup or an operator's
 * sqlite3 shell would: BEGIN IMMEDIATE on the database file, print LOCKED, hold it for the given
 * seconds, roll back and exit. Usage: node sqlite-lock-child.js <database file> <seconds>
 */
import Database from 'better-sqlite3';

const [file, seconds] = process.argv.slice(2);
const db = new Database(file!, { fileMustExist: true });
db.pragma('busy_timeout = 10000');
db.exec('BEGIN IMMEDIATE');
process.stdout.write('LOCKED\n');
setTimeout(() => {
  db.exec('ROLLBACK');
  db.close();
  process.stdout.write('RELEASED\n');
}, Number(seconds) * 1000);
