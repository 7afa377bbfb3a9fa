//! Index advice from the catalog, never applied: foreign keys without an
//! index whose leading columns cover them, and large tables read mostly by
//! sequential scans (what the original service's
//! `004_database_performance_optimization.sql` fixed by hand).

use tokio_postgres::Client;

/// Foreign keys whose columns are not the leading columns of any index.
const UNINDEXED_FOREIGN_KEYS: &str = "
SELECT quote_ident(n.nspname) || '.' || quote_ident(t.relname) AS table_name,
       c.conname::text AS constraint_name,
       array_agg(quote_ident(a.attname::text) ORDER BY k.ord) AS columns
FROM pg_constraint c
JOIN pg_class t ON t.oid = c.conrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
WHERE c.contype = 'f'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'perfproxy')
  AND NOT EXISTS (
      SELECT 1 FROM pg_index i
      WHERE i.indrelid = c.conrelid
        AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] @> c.conkey
        AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] <@ c.conkey)
GROUP BY n.nspname, t.relname, c.conname
ORDER BY 1, 2";

/// Tables of 10 000+ rows scanned sequentially far more than by index.
const SEQUENTIAL_TABLES: &str = "
SELECT quote_ident(schemaname) || '.' || quote_ident(relname) AS table_name,
       seq_scan, coalesce(idx_scan, 0) AS idx_scan, n_live_tup
FROM pg_stat_user_tables
WHERE n_live_tup >= 10000 AND seq_scan >= 20 AND seq_scan > 10 * coalesce(idx_scan, 0)
  AND schemaname <> 'perfproxy'
ORDER BY seq_tup_read DESC
LIMIT 20";

/// Every piece of advice, one sentence each.
pub async fn collect(client: &Client) -> Result<Vec<String>, tokio_postgres::Error> {
    let mut advice = Vec::new();
    for row in client.query(UNINDEXED_FOREIGN_KEYS, &[]).await? {
        let table: String = row.get(0);
        let constraint: String = row.get(1);
        let columns: Vec<String> = row.get(2);
        let cols = columns.join(", ");
        advice.push(format!(
            "Foreign key {constraint} on {table} ({cols}) has no index starting with those columns: \
             joins and deletes on the referenced table scan {table}. Fix: CREATE INDEX CONCURRENTLY ON {table} ({cols});"
        ));
    }
    for row in client.query(SEQUENTIAL_TABLES, &[]).await? {
        let table: String = row.get(0);
        let (seq, idx, rows): (i64, i64, i64) = (row.get(1), row.get(2), row.get(3));
        advice.push(format!(
            "Table {table} ({rows} rows) is read mostly by sequential scans ({seq} sequential, {idx} by index): \
             index the columns its queries filter on (see slow_queries). Fix: CREATE INDEX CONCURRENTLY ON {table} (<filtered columns>);"
        ));
    }
    Ok(advice)
}
