//! Real PostgreSQL for the suites: fresh databases on the cluster with
//! `pg_stat_statements` preloaded (port 5433, made by scripts/services.sh;
//! `PERFPROXY_TEST_PGSS_PORT` overrides), a connection, `perfproxy migrate`.

use std::process::Command;

use tokio_postgres::NoTls;

pub fn pgss_port() -> u16 {
    std::env::var("PERFPROXY_TEST_PGSS_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(5433)
}

/// A fresh database on the pg_stat_statements cluster; returns its URL.
pub async fn fresh_database() -> String {
    let port = pgss_port();
    let admin = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let (client, conn) = tokio_postgres::connect(&admin, NoTls)
        .await
        .expect("the pg_stat_statements cluster runs (scripts/services.sh)");
    tokio::spawn(conn);
    let name = format!("pp_test_{}", fastrand::u32(..));
    client.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    format!("postgres://postgres@127.0.0.1:{port}/{name}")
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

/// `perfproxy migrate`: (exit code, stdout, stderr).
pub fn migrate(url: &str) -> (i32, String, String) {
    let out = Command::new(super::binary()).args(["migrate", "--database-url", url]).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}
