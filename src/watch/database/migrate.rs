//! `perfproxy migrate`: applies the SQL files of `migrations/` (embedded in
//! the binary) in order, each in its own transaction under an advisory lock,
//! recording each in `perfproxy.schema_migrations`. Idempotent; never run
//! implicitly.

use tokio_postgres::NoTls;

/// The migrations, in order: (version, SQL).
pub const MIGRATIONS: &[(&str, &str)] = &[
    ("001_pg_stat_statements", include_str!("../../../migrations/001_pg_stat_statements.sql")),
    ("002_route_history", include_str!("../../../migrations/002_route_history.sql")),
    ("003_route_history_histograms", include_str!("../../../migrations/003_route_history_histograms.sql")),
    ("004_slow_requests", include_str!("../../../migrations/004_slow_requests.sql")),
    ("005_slo_minutes", include_str!("../../../migrations/005_slo_minutes.sql")),
];

/// Serialises concurrent `migrate` runs (any constant; "perfproxy" in hex-ish).
const LOCK_KEY: i64 = 0x7065_7266_7072_6f78;

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("connecting: {0}")]
    Connect(#[source] tokio_postgres::Error),
    #[error("migration {version}: {source}")]
    Apply { version: String, source: tokio_postgres::Error },
}

impl MigrateError {
    /// The error with every cause under it (what the server said).
    pub fn describe(&self) -> String {
        crate::redact::chain(self)
    }
}

/// Applies the migrations not yet applied; returns the versions it applied.
pub async fn run(url: &str) -> Result<Vec<String>, MigrateError> {
    let (mut client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(MigrateError::Connect)?;
    let conn = tokio::spawn(connection);
    let setup = "CREATE SCHEMA IF NOT EXISTS perfproxy;
         CREATE TABLE IF NOT EXISTS perfproxy.schema_migrations (
             version text PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now())";
    let apply_err = |version: &str| {
        let version = version.to_string();
        move |source| MigrateError::Apply { version, source }
    };
    client.batch_execute(setup).await.map_err(apply_err("setup"))?;
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS {
        let tx = client.transaction().await.map_err(apply_err(version))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY]).await.map_err(apply_err(version))?;
        let done = tx
            .query_opt("SELECT 1 FROM perfproxy.schema_migrations WHERE version = $1", &[version])
            .await
            .map_err(apply_err(version))?;
        if done.is_some() {
            continue;
        }
        tx.batch_execute(sql).await.map_err(apply_err(version))?;
        tx.execute("INSERT INTO perfproxy.schema_migrations (version) VALUES ($1)", &[version])
            .await
            .map_err(apply_err(version))?;
        tx.commit().await.map_err(apply_err(version))?;
        applied.push(version.to_string());
    }
    drop(client);
    let _ = conn.await;
    Ok(applied)
}
