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
       seq_scan, coalesce(idx_scan, 0) AS idx_scan, n_live_tup, relid
FROM pg_stat_user_tables
WHERE n_live_tup >= 10000 AND seq_scan >= 20 AND seq_scan > 10 * coalesce(idx_scan, 0)
  AND schemaname <> 'perfproxy'
ORDER BY seq_tup_read DESC
LIMIT 20";

/// The table's column that its recorded queries filter on most (by time
/// spent), among columns no index starts with; needs pg_stat_statements.
const FILTERED_COLUMN: &str = "
SELECT quote_ident(a.attname::text)
FROM pg_attribute a
JOIN pg_class t ON t.oid = a.attrelid
JOIN pg_stat_statements s
  ON s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
 AND s.query ~* ('\\m' || t.relname || '\\M')
 AND s.query ~* ('where.*\\m' || a.attname || '\\M\\s*(=|<|>|in\\s*\\(|like|between|is\\s)')
WHERE t.oid = $1 AND a.attnum > 0 AND NOT a.attisdropped
  AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = t.oid AND i.indkey[0] = a.attnum)
GROUP BY a.attname
ORDER BY sum(s.total_exec_time) DESC
LIMIT 1";

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
        let relid: u32 = row.get(4);
        // Without pg_stat_statements the column cannot be known: say so.
        let column: Option<String> = match client.query_opt(FILTERED_COLUMN, &[&relid]).await {
            Ok(row) => row.map(|r| r.get(0)),
            Err(_) => None,
        };
        let (why, cols) = match &column {
            Some(c) => (format!("its queries filter on {c}, which no index starts with"), c.clone()),
            None => (
                "index the columns its queries filter on (see slow_queries)".to_string(),
                "<filtered columns>".to_string(),
            ),
        };
        advice.push(format!(
            "Table {table} ({rows} rows) is read mostly by sequential scans ({seq} sequential, {idx} by index); \
             {why}. Fix: CREATE INDEX CONCURRENTLY ON {table} ({cols});"
        ));
    }
    Ok(advice)
}
