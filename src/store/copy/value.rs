//! What a copy moves: a table's plan (its columns and their PostgreSQL types), one value
//! as both databases can hold it, and the checksum both sides are compared by.

use sha2::{Digest as _, Sha256};

/// A column's type on the PostgreSQL side, which decides how a SQLite value is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// BIGINT (SQLite INTEGER).
    Int,
    /// BOOLEAN (SQLite INTEGER 0 or 1).
    Bool,
    /// TEXT.
    Text,
    /// BYTEA (SQLite BLOB): raw messages, sent mail, papers, fingerprints.
    Bytes,
}

impl Kind {
    /// The kind of an `information_schema.columns.data_type`, if a copy can move it.
    pub fn from_pg(data_type: &str) -> Option<Kind> {
        match data_type {
            "bigint" => Some(Kind::Int),
            "boolean" => Some(Kind::Bool),
            "text" | "character varying" => Some(Kind::Text),
            "bytea" => Some(Kind::Bytes),
            _ => None,
        }
    }
}

/// One value, typed as the target column is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
}

impl Value {
    /// Bytes held, roughly: how batches are kept small enough to hold in memory.
    pub fn size(&self) -> usize {
        match self {
            Value::Text(t) => t.len(),
            Value::Bytes(b) => b.len(),
            _ => 8,
        }
    }
}

/// A column to copy.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub kind: Kind,
}

/// One table to copy, as the PostgreSQL schema has it.
#[derive(Debug, Clone)]
pub struct TablePlan {
    pub name: String,
    /// In the order both sides are read and written.
    pub columns: Vec<Column>,
    /// Columns that refer to another row of the same table (a request marked the duplicate
    /// of a later one): inserted empty, then filled in once every row is there.
    pub self_refs: Vec<usize>,
    /// The single-column primary key, which those fill-ins find their row by.
    pub key: Option<usize>,
    /// The identity column, whose sequence is moved past the copied ids.
    pub identity: Option<String>,
}

/// Rows read from the source, in plan order, a batch at a time.
pub type Rows = Vec<Vec<Value>>;

/// A table's rows as a multiset: the sum of each row's SHA-256, so the two sides agree
/// whatever order they return rows in, and two equal rows do not cancel out as they
/// would under XOR.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checksum {
    lanes: [u64; 4],
    pub rows: u64,
}

impl Checksum {
    pub fn add(&mut self, row: &[Value]) {
        let mut hash = Sha256::new();
        for value in row {
            match value {
                Value::Null => hash.update([0]),
                Value::Int(i) => {
                    hash.update([1]);
                    hash.update(i.to_le_bytes());
                }
                Value::Bool(b) => hash.update([2, u8::from(*b)]),
                Value::Text(t) => {
                    hash.update([3]);
                    hash.update((t.len() as u64).to_le_bytes());
                    hash.update(t.as_bytes());
                }
                Value::Bytes(b) => {
                    hash.update([4]);
                    hash.update((b.len() as u64).to_le_bytes());
                    hash.update(b);
                }
            }
        }
        let digest = hash.finalize();
        for (lane, chunk) in self.lanes.iter_mut().zip(digest.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            *lane = lane.wrapping_add(u64::from_le_bytes(word));
        }
        self.rows += 1;
    }

    /// The sum as 64 hex digits.
    pub fn hex(&self) -> String {
        self.lanes.iter().map(|l| format!("{l:016x}")).collect()
    }
}

/// A table or column name quoted for SQL (both databases quote alike). Names come from the
/// schemas, never from mail, but are quoted all the same.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The columns of a plan, quoted and comma-separated.
pub fn column_list(plan: &TablePlan) -> String {
    plan.columns.iter().map(|c| ident(&c.name)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_ignore_order_but_not_repeats_or_changes() {
        let a = vec![Value::Int(1), Value::Text("a".into()), Value::Bytes(vec![0, 1])];
        let b = vec![Value::Int(2), Value::Null, Value::Bool(true)];
        let sum = |rows: &[&Vec<Value>]| {
            let mut c = Checksum::default();
            rows.iter().for_each(|r| c.add(r));
            c
        };
        assert_eq!(sum(&[&a, &b]), sum(&[&b, &a]));
        assert_ne!(sum(&[&a, &a, &b]).hex(), sum(&[&b]).hex());
        let mut changed = a.clone();
        changed[2] = Value::Bytes(vec![0, 2]);
        assert_ne!(sum(&[&a, &b]).hex(), sum(&[&changed, &b]).hex());
        // A text and the same bytes as a blob are different values.
        assert_ne!(
            sum(&[&vec![Value::Text("ab".into())]]).hex(),
            sum(&[&vec![Value::Bytes(b"ab".to_vec())]]).hex()
        );
    }
}
