//! `gatehouse db copy`: everything a SQLite database holds, copied into an empty
//! PostgreSQL database (the way from one server to several), and proved equal before it is
//! kept.
//!
//! The copy is one PostgreSQL transaction: the migrations, the check that the database
//! holds no gatehouse data, every row of every table the SQLite migrations made (ids kept),
//! the identity sequences moved past the copied ids, and the comparison. Each table is read
//! back and summed ([`value::Checksum`], every value of every row, raw bytes included) as
//! the source was; only when every table's count and sum agree is the transaction
//! committed. A refusal, a failure or a difference leaves the database as it was.
//!
//! The SQLite file's write lock is held from the first read until the commit, so nothing
//! changes it meanwhile; the caller checks first that no daemon runs on it.

mod source;
mod target;
mod value;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;
use tokio::sync::mpsc;

use crate::config::DatabaseSettings;
use source::Source;
pub use value::Checksum;
use value::{Rows, TablePlan, Value};

/// One table: what the SQLite file held and what PostgreSQL holds after the copy.
#[derive(Debug, Clone)]
pub struct TableCopied {
    pub table: String,
    pub source: Checksum,
    pub target: Checksum,
}

impl TableCopied {
    /// Same number of rows, same values.
    pub fn matches(&self) -> bool {
        self.source == self.target
    }
}

/// The outcome of a copy that ran to the comparison.
#[derive(Debug, Clone)]
pub struct Copied {
    /// In the order they were copied (every table before the tables that refer to it).
    pub tables: Vec<TableCopied>,
    /// Whether it was kept: only when every table matched.
    pub committed: bool,
}

/// What the reading thread hands over.
enum Read {
    Batch(usize, Rows),
    Done(usize, Checksum),
}

/// Copies the SQLite file at `sqlite` into the PostgreSQL database `target` names, which
/// must hold no gatehouse data yet.
pub async fn sqlite_to_postgres(sqlite: &Path, target: &DatabaseSettings) -> anyhow::Result<Copied> {
    let options = crate::store::postgres::connect_options(target)?;
    let mut conn = PgConnection::connect_with(&options)
        .await
        .with_context(|| format!("Cannot connect to the database {}", target.url))?;
    let mut tx = conn.begin().await.context("Cannot start the copy's transaction")?;
    target::migrate(&mut tx).await?;
    let held = target::tables_with_rows(&mut tx).await?;
    if !held.is_empty() {
        bail!(
            "Refused: the database {} already holds gatehouse data (in {}); the copy needs an empty database, and nothing was changed",
            target.url,
            held.join(", ")
        );
    }
    let copied =
        copy_tables(&mut tx, sqlite).await.context("Nothing was copied (the transaction was rolled back)")?;
    let committed = copied.tables.iter().all(TableCopied::matches);
    if committed {
        tx.commit().await.context("Cannot commit the copy")?;
    } else {
        tx.rollback().await.context("Cannot roll back the copy")?;
    }
    // The SQLite file's lock is let go only now that the copy is kept (or not).
    drop(copied.source);
    let _ = conn.close().await;
    Ok(Copied { tables: copied.tables, committed })
}

/// The compared tables, and the source still locked.
struct Compared {
    tables: Vec<TableCopied>,
    source: Source,
}

/// Everything between the empty check and the commit, in the transaction `tx` holds.
async fn copy_tables(tx: &mut PgConnection, sqlite: &Path) -> anyhow::Result<Compared> {
    let path: PathBuf = sqlite.to_path_buf();
    let (source, tables) = tokio::task::spawn_blocking(move || {
        let source = Source::open(&path)?;
        let tables = source.tables()?;
        anyhow::Ok((source, tables))
    })
    .await
    .context("The SQLite thread failed")??;
    let plans = target::plan(tx, &tables).await?;

    let (send, mut received) = mpsc::channel::<Read>(2);
    let reading = {
        let plans = plans.clone();
        tokio::task::spawn_blocking(move || {
            for (i, plan) in plans.iter().enumerate() {
                let sum = source.read(plan, |rows| {
                    send.blocking_send(Read::Batch(i, rows)).context("The copy stopped writing")
                })?;
                send.blocking_send(Read::Done(i, sum)).context("The copy stopped writing")?;
            }
            // Kept (with its lock) until the copy is committed.
            anyhow::Ok(source)
        })
    };
    let mut sums = vec![None; plans.len()];
    let mut pending: Vec<(usize, i64, i64)> = Vec::new();
    let written: anyhow::Result<()> = async {
        while let Some(read) = received.recv().await {
            match read {
                Read::Batch(i, mut rows) => {
                    pending.extend(hold_back_self_refs(&plans[i], &mut rows));
                    target::insert(tx, &plans[i], rows).await?;
                }
                Read::Done(i, sum) => {
                    for (column, key, value) in pending.drain(..) {
                        target::set_self_ref(tx, &plans[i], column, key, value).await?;
                    }
                    target::advance_identity(tx, &plans[i]).await?;
                    sums[i] = Some(sum);
                }
            }
        }
        Ok(())
    }
    .await;
    // A write that failed drops the receiver, which stops the reader; its error is the cause.
    drop(received);
    let source = reading.await.context("The SQLite thread failed")?;
    written?;
    let source = source?;

    let mut copied = Vec::with_capacity(plans.len());
    for (plan, sum) in plans.iter().zip(sums) {
        let source_sum = sum.context("A table was not read to its end")?;
        copied.push(TableCopied {
            table: plan.name.clone(),
            source: source_sum,
            target: target::checksum(tx, plan).await?,
        });
    }
    Ok(Compared { tables: copied, source })
}

/// Takes out of `rows` the values that refer to rows of the same table (inserted as NULL,
/// filled in when the table is complete): (column, row's key, value).
fn hold_back_self_refs(plan: &TablePlan, rows: &mut Rows) -> Vec<(usize, i64, i64)> {
    let Some(key) = plan.key else { return Vec::new() };
    let mut held = Vec::new();
    for row in rows.iter_mut() {
        let Value::Int(id) = row[key] else { continue };
        for &column in &plan.self_refs {
            if let Value::Int(value) = row[column] {
                row[column] = Value::Null;
                held.push((column, id, value));
            }
        }
    }
    held
}

#[cfg(test)]
mod tests {
    use super::value::{Column, Kind};
    use super::*;

    #[test]
    fn references_within_a_table_wait_until_every_row_is_in() {
        let int = |name: &str| Column { name: name.into(), kind: Kind::Int };
        let plan = TablePlan {
            name: "requests".into(),
            columns: vec![int("id"), int("duplicate_of"), int("probable_duplicate_of")],
            self_refs: vec![1, 2],
            key: Some(0),
            identity: Some("id".into()),
        };
        // Request 1 marked the duplicate of the later request 2.
        let mut rows = vec![
            vec![Value::Int(1), Value::Int(2), Value::Null],
            vec![Value::Int(2), Value::Null, Value::Int(1)],
        ];
        let held = hold_back_self_refs(&plan, &mut rows);
        assert_eq!(held, vec![(1, 1, 2), (2, 2, 1)]);
        assert!(rows.iter().all(|r| r[1] == Value::Null && r[2] == Value::Null));
    }
}
