//! Small facts about the installation (`meta`), and the statements about the connection itself.

use anyhow::Context as _;
use sqlx::PgConnection;

pub(super) async fn get(conn: &mut PgConnection, key: &str) -> anyhow::Result<Option<String>> {
    sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
        .bind(key)
        .fetch_optional(&mut *conn)
        .await
        .context("Cannot read meta")
}

/// Sets `key` only if it has no value yet; returns the value now held (one statement, so two
/// nodes starting at once agree on it).
pub(super) async fn init(conn: &mut PgConnection, key: &str, value: &str) -> anyhow::Result<String> {
    sqlx::query_scalar(
        "WITH ins AS (
             INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING RETURNING value
         )
         SELECT value FROM ins UNION ALL SELECT value FROM meta WHERE key = $1 LIMIT 1",
    )
    .bind(key)
    .bind(value)
    .fetch_one(&mut *conn)
    .await
    .context("Cannot write meta")
}

pub(super) async fn set(conn: &mut PgConnection, key: &str, value: &str) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value")
        .bind(key)
        .bind(value)
        .execute(&mut *conn)
        .await
        .context("Cannot write meta")?;
    Ok(())
}

/// A round trip, proving the database answers.
pub(super) async fn ping(conn: &mut PgConnection) -> anyhow::Result<()> {
    sqlx::query("SELECT 1").execute(&mut *conn).await.context("The database does not answer")?;
    Ok(())
}

/// Runs a statement that takes no values and returns no rows (savepoints), failing with `what`.
pub(super) async fn exec(
    conn: &mut PgConnection,
    sql: &'static str,
    what: &'static str,
) -> anyhow::Result<()> {
    sqlx::query(sql).execute(&mut *conn).await.context(what)?;
    Ok(())
}
