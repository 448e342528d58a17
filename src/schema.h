/* schema — the schema/NNN_*.sql files, embedded at build time (cmake/embed_schema.cmake).
 * schema_files[i] is version i + 1; applying them in order brings an empty database to
 * version schema_file_count. */
#ifndef APISIM_SCHEMA_H
#define APISIM_SCHEMA_H

struct schema_file {
    const char *name; /* e.g. "001_core.sql" */
    const char *sql;  /* the file's text */
};

extern const struct schema_file schema_files[];
extern const int schema_file_count;

#endif
