//! The SQLite side of a copy: the file, held still while it is read.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use super::value::{Checksum, Kind, Rows, TablePlan, Value, column_list, ident};
use crate::store::postgres;

/// How long to wait for the file's write lock before saying something else holds it.
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// A batch handed to the target: at most this many rows...
const BATCH_ROWS: usize = 500;
/// ...or about this many bytes (raw messages are large), whichever comes first.
const BATCH_BYTES: usize = 8 * 1024 * 1024;

/// The SQLite file, its write lock held from [`Source::open`] until dropped, so nothing
/// changes it while it is read and every table is read as of the same moment.
pub struct Source {
    conn: Connection,
}

impl Source {
    pub fn open(path: &Path) -> anyhow::Result<Source> {
        if !path.is_file() {
            bail!("There is no SQLite database at {}: nothing to copy", path.display());
        }
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .with_context(|| format!("Cannot open the SQLite database {}", path.display()))?;
        conn.busy_timeout(LOCK_WAIT).context("Cannot set the SQLite busy timeout")?;
        // The write lock rather than a read snapshot: a daemon started by mistake during
        // the copy waits (and fails) instead of taking in mail the copy would miss.
        conn.execute_batch("BEGIN IMMEDIATE").with_context(|| {
            format!(
                "Cannot lock the SQLite database {} for the copy: something is writing to it (is `gatehouse run` still running? stop it first)",
                path.display()
            )
        })?;
        Ok(Source { conn })
    }

    /// Every table the migrations made (not SQLite's own, not the migrator's), with its
    /// columns.
    pub fn tables(&self) -> anyhow::Result<Vec<(String, Vec<String>)>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> '_sqlx_migrations' ORDER BY name",
            )
            .context("Cannot list the SQLite tables")?;
        let names = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .context("Cannot list the SQLite tables")?;
        names
            .into_iter()
            .map(|table| {
                let mut stmt = self.conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
                let columns =
                    stmt.query_map([&table], |r| r.get::<_, String>(0))?.collect::<Result<_, _>>()?;
                Ok((table, columns))
            })
            .collect::<Result<_, rusqlite::Error>>()
            .context("Cannot read the SQLite tables' columns")
    }

    /// Reads every row of the plan's table, hands them to `send` a batch at a time, and
    /// returns their checksum.
    pub fn read(
        &self,
        plan: &TablePlan,
        mut send: impl FnMut(Rows) -> anyhow::Result<()>,
    ) -> anyhow::Result<Checksum> {
        let sql = format!("SELECT {} FROM {} ORDER BY rowid", column_list(plan), ident(&plan.name));
        let mut stmt =
            self.conn.prepare(&sql).with_context(|| format!("Cannot read the SQLite table {}", plan.name))?;
        let mut rows =
            stmt.query([]).with_context(|| format!("Cannot read the SQLite table {}", plan.name))?;
        let mut checksum = Checksum::default();
        let (mut batch, mut bytes) = (Vec::new(), 0);
        while let Some(row) =
            rows.next().with_context(|| format!("Cannot read the SQLite table {}", plan.name))?
        {
            let mut values = Vec::with_capacity(plan.columns.len());
            for (i, column) in plan.columns.iter().enumerate() {
                let value = row.get_ref(i)?;
                values.push(take(value, column.kind).with_context(|| {
                    format!("Cannot copy {}.{} of row {}", plan.name, column.name, checksum.rows + 1)
                })?);
            }
            checksum.add(&values);
            bytes += values.iter().map(Value::size).sum::<usize>();
            batch.push(values);
            if batch.len() >= BATCH_ROWS || bytes >= BATCH_BYTES {
                send(std::mem::take(&mut batch))?;
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            send(batch)?;
        }
        Ok(checksum)
    }
}

/// A SQLite value as the PostgreSQL column's type holds it; anything that would not come
/// back the same (a fraction, a flag other than 0 or 1, text that is not UTF-8) stops the
/// copy rather than being changed on the way. The one change is the one the PostgreSQL
/// store makes to all text from mail ([`postgres::text`]): a NUL, which SQLite kept and
/// PostgreSQL cannot hold, becomes U+FFFD; the raw bytes keep it. Both sides' checksums
/// are of the value as copied.
fn take(value: ValueRef<'_>, kind: Kind) -> anyhow::Result<Value> {
    Ok(match (value, kind) {
        (ValueRef::Null, _) => Value::Null,
        (ValueRef::Integer(i), Kind::Int) => Value::Int(i),
        (ValueRef::Integer(i @ (0 | 1)), Kind::Bool) => Value::Bool(i == 1),
        (ValueRef::Text(t), Kind::Text) => {
            let t = std::str::from_utf8(t).context("Not UTF-8 text")?;
            Value::Text(postgres::text::text(t).into_owned())
        }
        (ValueRef::Integer(i), Kind::Text) => Value::Text(i.to_string()),
        (ValueRef::Blob(b) | ValueRef::Text(b), Kind::Bytes) => Value::Bytes(b.to_vec()),
        (other, kind) => bail!("A {:?} value where PostgreSQL holds {kind:?}", other.data_type()),
    })
}
