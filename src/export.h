/* export — the one-shot commands that read a recording out or bring traffic in:
 *
 *   apisim ls     [--db FILE] [--session NAME] [--json]
 *   apisim show   [--db FILE] ID
 *   apisim export [--db FILE] [--session NAME] --format har|jsonl|sql [--output FILE]
 *   apisim import [--db FILE] [--session NAME] [--max-body SIZE] FILE
 *   apisim init   [--db FILE]
 *
 * Each takes the command line from the subcommand on (argv[0] is "ls", "show", ...), writes
 * its result to stdout (or only to --output FILE) and its diagnostics to stderr, and
 * returns the process exit status: 0 success, 1 runtime failure (database or file
 * unusable, nothing importable), 2 usage error. --db defaults to "apisim.db"; FILE.sql
 * text dumps are read anywhere a database is read.
 *
 * export --format sql writes a deterministic dump: PRAGMA user_version, BEGIN TRANSACTION,
 * the tables (by name), their rows (parents before children, each table's rows by primary
 * key, one INSERT per row), then indexes, views and triggers (each by name), COMMIT. The
 * same database always gives the same bytes, so dump -> load -> dump is byte-identical.
 *
 * import reads HAR 1.2 or JSONL (told apart by content), checks every entry fully before
 * storing it, reports and skips what it cannot use, redacts secret headers as recording
 * does, and stores the rest with source 'import' in one transaction.
 */
#ifndef APISIM_EXPORT_H
#define APISIM_EXPORT_H

int ls_main(int argc, char **argv);
int show_main(int argc, char **argv);
int export_main(int argc, char **argv);
int import_main(int argc, char **argv);
/* Create the database with apisim's schema, or migrate an older one; print its version. */
int init_main(int argc, char **argv);

#endif
