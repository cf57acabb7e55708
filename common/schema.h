/* PostgreSQL schema: numbered migrations, applied at start-up under an advisory lock and
 * recorded in schema_migrations. */
#ifndef WH_SCHEMA_H
#define WH_SCHEMA_H

/* The whole set-up script (one transaction, idempotent); caller frees. */
char *schema_setup_sql(void);
int schema_version(void); /* newest migration number */

#endif
