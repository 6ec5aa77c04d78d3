//! Papers on SQLite: the files a requester sent with a request, kept for `circulate`, and the
//! weekly summary's figures about them.

use super::*;
use crate::classify::AttachmentBody;
use crate::store::{PaperCounts, PaperRow};

fn paper_from_row(row: &Row<'_>) -> anyhow::Result<PaperRow> {
    Ok(PaperRow {
        id: row.get("id")?,
        message_id: MessageId(row.get("message_id")?),
        name: row.get("name")?,
        content_type: row.get("content_type")?,
        bytes: row.get("bytes")?,
        received_at: from_millis(row.get("received_at")?),
        circulated_at: row.get::<_, Option<i64>>("circulated_at")?.map(from_millis),
    })
}

impl SqliteStore {
    pub(super) async fn paper_counts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> anyhow::Result<PaperCounts> {
        self.read(move |c| {
            let circulated: i64 = scalar(
                c,
                "SELECT COUNT(DISTINCT request_id) FROM papers WHERE circulated_at >= ?1 AND circulated_at < ?2",
                params![to_millis(from), to_millis(to)],
                "Cannot count the papers circulated",
            )?;
            let awaited: i64 = scalar(
                c,
                "SELECT COUNT(*) FROM requests r WHERE r.decision = 'paper' AND r.status = 'scheduled'
                 AND NOT EXISTS (SELECT 1 FROM papers p WHERE p.request_id = r.id)",
                [],
                "Cannot count the papers awaited",
            )?;
            Ok(PaperCounts {
                circulated: usize::try_from(circulated).unwrap_or(0),
                awaited: usize::try_from(awaited).unwrap_or(0),
            })
        })
        .await
    }
}

impl SqliteTx {
    pub(super) async fn add_paper(
        &mut self,
        request_id: RequestId,
        message_id: MessageId,
        file: &AttachmentBody,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        exec(
            &self.conn,
            "INSERT INTO papers (request_id, message_id, name, content_type, bytes, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![request_id, message_id.0, file.name, file.content_type, file.bytes, to_millis(at)],
            "Cannot keep the paper",
        )
        .map(drop)
    }

    pub(super) async fn papers(&mut self, request_id: RequestId) -> anyhow::Result<Vec<PaperRow>> {
        all(
            &self.conn,
            "SELECT id, message_id, name, content_type, bytes, received_at, circulated_at
             FROM papers WHERE request_id = ?1 ORDER BY received_at, id",
            [request_id],
            paper_from_row,
            "Cannot read the request's papers",
        )
    }

    pub(super) async fn mark_papers_circulated(
        &mut self,
        ids: &[i64],
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        for id in ids {
            exec(
                &self.conn,
                "UPDATE papers SET circulated_at = ?2 WHERE id = ?1",
                params![id, to_millis(at)],
                "Cannot record the papers circulated",
            )?;
        }
        Ok(())
    }
}
