//! The PostgreSQL side of a copy: every query runs on the one connection whose transaction
//! holds the whole copy, so a refusal or a failure leaves the database as it was.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, bail};
use futures::TryStreamExt as _;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Postgres, QueryBuilder, Row as _};

use super::value::{Checksum, Column, Kind, Rows, TablePlan, Value, column_list, ident};

/// Brings the schema up to date inside the copy's transaction (each migration a savepoint).
pub async fn migrate(conn: &mut PgConnection) -> anyhow::Result<()> {
    crate::store::postgres::MIGRATOR.run(&mut *conn).await.context("Cannot apply the PostgreSQL migrations")
}

/// The gatehouse tables that already hold rows (the migrator's own aside).
pub async fn tables_with_rows(conn: &mut PgConnection) -> anyhow::Result<Vec<String>> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' AND table_name <> '_sqlx_migrations' ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await
    .context("Cannot list the PostgreSQL tables")?;
    let mut held = Vec::new();
    for table in tables {
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {})", ident(&table));
        let any: bool = sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(&mut *conn)
            .await
            .with_context(|| format!("Cannot read the PostgreSQL table {table}"))?;
        if any {
            held.push(table);
        }
    }
    Ok(held)
}

/// The plan for the source's tables, from the PostgreSQL schema: each table's columns and
/// their types, in an order where every table comes after the tables it refers to. Fails,
/// naming the difference, unless both databases have the same tables and columns.
pub async fn plan(
    conn: &mut PgConnection,
    source: &[(String, Vec<String>)],
) -> anyhow::Result<Vec<TablePlan>> {
    let schema = "Cannot read the PostgreSQL schema";
    let columns: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text, is_identity::text FROM information_schema.columns WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position",
    )
    .fetch_all(&mut *conn)
    .await
    .context(schema)?;
    let refs: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT src.relname::text, dst.relname::text, a.attname::text FROM pg_constraint c JOIN pg_class src ON src.oid = c.conrelid JOIN pg_class dst ON dst.oid = c.confrelid JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) WHERE c.contype = 'f' AND src.relnamespace = current_schema()::regnamespace",
    )
    .fetch_all(&mut *conn)
    .await
    .context(schema)?;
    let keys: Vec<(String, String)> = sqlx::query_as(
        "SELECT t.relname::text, a.attname::text FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] WHERE c.contype = 'p' AND cardinality(c.conkey) = 1 AND t.relnamespace = current_schema()::regnamespace",
    )
    .fetch_all(&mut *conn)
    .await
    .context(schema)?;

    let mut plans = BTreeMap::new();
    for (table, source_columns) in source {
        let target: Vec<&(String, String, String, String)> =
            columns.iter().filter(|(t, ..)| t == table).collect();
        if target.is_empty() {
            bail!(
                "The PostgreSQL schema has no table {table}, which the SQLite database has: this gatehouse is older than the one that wrote the SQLite file"
            );
        }
        let names: BTreeSet<&str> = target.iter().map(|(_, c, ..)| c.as_str()).collect();
        let wanted: BTreeSet<&str> = source_columns.iter().map(String::as_str).collect();
        if names != wanted {
            bail!(
                "The table {table} differs between the databases (SQLite only: {:?}; PostgreSQL only: {:?}): run `gatehouse migrate` on the SQLite file with this version first",
                wanted.difference(&names).collect::<Vec<_>>(),
                names.difference(&wanted).collect::<Vec<_>>()
            );
        }
        let mut plan = TablePlan {
            name: table.clone(),
            columns: Vec::new(),
            self_refs: Vec::new(),
            key: None,
            identity: None,
        };
        for (_, name, data_type, identity) in target {
            let Some(kind) = Kind::from_pg(data_type) else {
                bail!(
                    "The PostgreSQL column {table}.{name} is {data_type}, which a copy from SQLite cannot fill"
                );
            };
            if identity == "YES" {
                plan.identity = Some(name.clone());
            }
            if refs.iter().any(|(src, dst, col)| src == table && dst == table && col == name) {
                plan.self_refs.push(plan.columns.len());
            }
            if keys.iter().any(|(t, col)| t == table && col == name) {
                plan.key = Some(plan.columns.len());
            }
            plan.columns.push(Column { name: name.clone(), kind });
        }
        if !plan.self_refs.is_empty() && plan.key.is_none() {
            bail!("The table {table} refers to itself but has no single-column primary key to copy it by");
        }
        plans.insert(table.clone(), plan);
    }
    // Tables whose referred-to tables are all placed, alphabetically, until none is left.
    let mut ordered: Vec<TablePlan> = Vec::new();
    while !plans.is_empty() {
        let placed: BTreeSet<&str> = ordered.iter().map(|p| p.name.as_str()).collect();
        let ready = plans.keys().find(|table| {
            refs.iter()
                .filter(|(src, dst, _)| src == *table && dst != *table && plans.contains_key(dst))
                .all(|(_, dst, _)| placed.contains(dst.as_str()))
        });
        let Some(ready) = ready.cloned() else {
            bail!(
                "The PostgreSQL tables refer to each other in a circle: {:?}",
                plans.keys().collect::<Vec<_>>()
            );
        };
        ordered.extend(plans.remove(&ready));
    }
    Ok(ordered)
}

/// Inserts a batch of rows as they are (ids included).
pub async fn insert(conn: &mut PgConnection, plan: &TablePlan, rows: Rows) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut query =
        QueryBuilder::<Postgres>::new(format!("INSERT INTO {} ({}) ", ident(&plan.name), column_list(plan)));
    query.push_values(rows, |mut b, row| {
        for (value, column) in row.into_iter().zip(&plan.columns) {
            match (value, column.kind) {
                (Value::Null, Kind::Int) => b.push_bind(None::<i64>),
                (Value::Null, Kind::Bool) => b.push_bind(None::<bool>),
                (Value::Null, Kind::Text) => b.push_bind(None::<String>),
                (Value::Null, Kind::Bytes) => b.push_bind(None::<Vec<u8>>),
                (Value::Int(i), _) => b.push_bind(i),
                (Value::Bool(v), _) => b.push_bind(v),
                (Value::Text(t), _) => b.push_bind(t),
                (Value::Bytes(v), _) => b.push_bind(v),
            };
        }
    });
    query
        .build()
        .execute(&mut *conn)
        .await
        .with_context(|| format!("Cannot copy into the table {}", plan.name))?;
    Ok(())
}

/// Fills in a column that refers to the same table, once every row it may name is there.
pub async fn set_self_ref(
    conn: &mut PgConnection,
    plan: &TablePlan,
    column: usize,
    key: i64,
    value: i64,
) -> anyhow::Result<()> {
    let key_column = plan.key.map(|k| plan.columns[k].name.as_str()).unwrap_or("id");
    let sql = format!(
        "UPDATE {} SET {} = $1 WHERE {} = $2",
        ident(&plan.name),
        ident(&plan.columns[column].name),
        ident(key_column)
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(value)
        .bind(key)
        .execute(&mut *conn)
        .await
        .with_context(|| format!("Cannot copy {}.{}", plan.name, plan.columns[column].name))?;
    Ok(())
}

/// Moves the identity's sequence just past the highest copied id, so the next row the
/// daemon writes takes the next id: no repeat, no gap.
pub async fn advance_identity(conn: &mut PgConnection, plan: &TablePlan) -> anyhow::Result<()> {
    let Some(column) = &plan.identity else { return Ok(()) };
    let sql = format!(
        "SELECT setval(pg_get_serial_sequence($1, $2), COALESCE(MAX({col}), 0) + 1, false) FROM {table}",
        col = ident(column),
        table = ident(&plan.name)
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(ident(&plan.name))
        .bind(column)
        .execute(&mut *conn)
        .await
        .with_context(|| format!("Cannot move the id sequence of {}", plan.name))?;
    Ok(())
}

/// Reads the table back and sums it as the source was summed.
pub async fn checksum(conn: &mut PgConnection, plan: &TablePlan) -> anyhow::Result<Checksum> {
    let sql = format!("SELECT {} FROM {}", column_list(plan), ident(&plan.name));
    let context = || format!("Cannot read back the PostgreSQL table {}", plan.name);
    let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&mut *conn);
    let mut sum = Checksum::default();
    while let Some(row) = rows.try_next().await.with_context(context)? {
        sum.add(&values(&row, &plan.columns).with_context(context)?);
    }
    Ok(sum)
}

fn values(row: &PgRow, columns: &[Column]) -> Result<Vec<Value>, sqlx::Error> {
    columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            Ok(match column.kind {
                Kind::Int => row.try_get::<Option<i64>, _>(i)?.map(Value::Int),
                Kind::Bool => row.try_get::<Option<bool>, _>(i)?.map(Value::Bool),
                Kind::Text => row.try_get::<Option<String>, _>(i)?.map(Value::Text),
                Kind::Bytes => row.try_get::<Option<Vec<u8>>, _>(i)?.map(Value::Bytes),
            }
            .unwrap_or(Value::Null))
        })
        .collect()
}
