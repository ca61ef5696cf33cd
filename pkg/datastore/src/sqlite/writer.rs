//! The single writer: group commit of every pending write, then publication to watchers.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::Batch;
use crate::{Event, EventKind, KeyValue, Result, Revision, StoreError};

/// Log row kinds.
pub(crate) const CREATED: i64 = 0;
pub(crate) const UPDATED: i64 = 1;
pub(crate) const DELETED: i64 = 2;

/// A write operation.
pub(crate) enum Op {
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    Compact {
        revision: Revision,
    },
    Checkpoint,
    Shutdown,
}

/// A write with the channel its answer goes to.
pub(crate) struct WriteReq {
    pub op: Op,
    pub reply: oneshot::Sender<Result<Option<KeyValue>>>,
}

pub(crate) struct Writer {
    pub conn: Connection,
    pub rx: mpsc::Receiver<WriteReq>,
    pub events: broadcast::Sender<Batch>,
    pub revision: Arc<AtomicI64>,
    pub compacted: Arc<AtomicI64>,
    pub batches: Arc<AtomicU64>,
    pub max_batch: usize,
}

fn current(conn: &Connection, key: &str) -> Result<Option<KeyValue>> {
    Ok(conn
        .prepare_cached("SELECT create_rev, mod_rev, value FROM kv WHERE key = ?1")?
        .query_row([key], |r| {
            Ok(KeyValue {
                key: key.to_string(),
                create_revision: r.get(0)?,
                mod_revision: r.get(1)?,
                value: Bytes::from(r.get::<_, Vec<u8>>(2)?),
            })
        })
        .optional()?)
}

/// What one batch did, before it is committed.
#[derive(Default)]
struct Applied {
    answers: Vec<Result<Option<KeyValue>>>,
    events: Vec<Event>,
    compact_to: Option<Revision>,
    checkpoint: bool,
    revision: Revision,
}

impl Writer {
    pub(crate) fn run(mut self) {
        while let Some(first) = self.rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < self.max_batch {
                match self.rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let shutdown = batch.iter().any(|r| matches!(r.op, Op::Shutdown));
            self.commit(batch);
            if shutdown {
                self.maintain();
                break;
            }
        }
        tracing::debug!("sqlite writer stopped");
    }

    fn apply(&self, tx: &Connection, batch: &[WriteReq], start: Revision) -> Result<Applied> {
        let mut a = Applied {
            revision: start,
            ..Default::default()
        };
        for req in batch {
            let answer = match &req.op {
                Op::Create { key, value } => match current(tx, key)? {
                    Some(_) => Err(StoreError::AlreadyExists(key.clone())),
                    None => {
                        a.revision += 1;
                        let rev = a.revision;
                        tx.prepare_cached("INSERT INTO kv (key, create_rev, mod_rev, value) VALUES (?1, ?2, ?2, ?3)")?.execute(params![key, rev, value.as_ref()])?;
                        tx.prepare_cached("INSERT INTO log (rev, key, kind, create_rev, prev_rev, value) VALUES (?1, ?2, ?3, ?1, NULL, ?4)")?.execute(params![rev, key, CREATED, value.as_ref()])?;
                        let kv = KeyValue {
                            key: key.clone(),
                            value: value.clone(),
                            create_revision: rev,
                            mod_revision: rev,
                        };
                        a.events.push(Event {
                            kind: EventKind::Created,
                            kv: kv.clone(),
                            prev: None,
                        });
                        Ok(Some(kv))
                    }
                },
                Op::Update {
                    key,
                    value,
                    expected,
                } => match current(tx, key)? {
                    None => Err(StoreError::NotFound(key.clone())),
                    Some(cur) if cur.mod_revision != *expected => Err(StoreError::Conflict {
                        key: key.clone(),
                        expected: *expected,
                        current: Box::new(cur),
                    }),
                    Some(cur) => {
                        a.revision += 1;
                        let rev = a.revision;
                        tx.prepare_cached("UPDATE kv SET mod_rev = ?2, value = ?3 WHERE key = ?1")?
                            .execute(params![key, rev, value.as_ref()])?;
                        tx.prepare_cached("INSERT INTO log (rev, key, kind, create_rev, prev_rev, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?.execute(params![rev, key, UPDATED, cur.create_revision, cur.mod_revision, value.as_ref()])?;
                        let kv = KeyValue {
                            key: key.clone(),
                            value: value.clone(),
                            create_revision: cur.create_revision,
                            mod_revision: rev,
                        };
                        a.events.push(Event {
                            kind: EventKind::Updated,
                            kv: kv.clone(),
                            prev: Some(cur),
                        });
                        Ok(Some(kv))
                    }
                },
                Op::Delete { key, expected } => match current(tx, key)? {
                    None => Err(StoreError::NotFound(key.clone())),
                    Some(cur) if expected.is_some_and(|e| e != cur.mod_revision) => {
                        Err(StoreError::Conflict {
                            key: key.clone(),
                            expected: expected.unwrap_or_default(),
                            current: Box::new(cur),
                        })
                    }
                    Some(cur) => {
                        a.revision += 1;
                        let rev = a.revision;
                        tx.prepare_cached("DELETE FROM kv WHERE key = ?1")?
                            .execute([key])?;
                        tx.prepare_cached("INSERT INTO log (rev, key, kind, create_rev, prev_rev, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?.execute(params![rev, key, DELETED, cur.create_revision, cur.mod_revision, cur.value.as_ref()])?;
                        let kv = KeyValue {
                            key: key.clone(),
                            value: cur.value.clone(),
                            create_revision: cur.create_revision,
                            mod_revision: rev,
                        };
                        a.events.push(Event {
                            kind: EventKind::Deleted,
                            kv: kv.clone(),
                            prev: Some(cur),
                        });
                        Ok(Some(kv))
                    }
                },
                Op::Compact { revision } => {
                    let target = (*revision).min(a.revision);
                    if target > self.compacted.load(Ordering::SeqCst)
                        && a.compact_to.is_none_or(|c| target > c)
                    {
                        // Keep the newest row of every key that still exists at `target`.
                        tx.execute(
                            "DELETE FROM log WHERE rev <= ?1 AND (kind = 2 OR rev < (SELECT MAX(l2.rev) FROM log l2 WHERE l2.key = log.key AND l2.rev <= ?1))",
                            [target],
                        )?;
                        tx.execute(
                            "UPDATE meta SET value = ?1 WHERE name = 'compact'",
                            [target],
                        )?;
                        a.compact_to = Some(target);
                    }
                    Ok(None)
                }
                Op::Checkpoint => {
                    a.checkpoint = true;
                    Ok(None)
                }
                Op::Shutdown => Ok(None),
            };
            a.answers.push(answer);
        }
        if a.revision != start {
            tx.prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'rev'")?
                .execute([a.revision])?;
        }
        Ok(a)
    }

    /// Truncate the WAL (freed pages stay in the file and are reused by later writes).
    fn maintain(&self) {
        let r: rusqlite::Result<(i64, i64, i64)> =
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                });
        match r {
            Ok((0, _, _)) => {}
            Ok((busy, log, done)) => tracing::debug!(
                busy,
                log,
                done,
                "WAL checkpoint incomplete (readers active)"
            ),
            Err(e) => tracing::debug!(error = %e, "WAL checkpoint failed"),
        }
    }

    /// Apply a batch in one transaction, answer each request, publish the events.
    fn commit(&mut self, batch: Vec<WriteReq>) {
        let start = self.revision.load(Ordering::SeqCst);
        let result = (|| -> Result<Applied> {
            let tx = self.conn.unchecked_transaction()?;
            let applied = self.apply(&tx, &batch, start)?;
            tx.commit()?;
            Ok(applied)
        })();
        match result {
            Ok(a) => {
                self.revision.store(a.revision, Ordering::SeqCst);
                if let Some(c) = a.compact_to {
                    self.compacted.store(c, Ordering::SeqCst);
                    tracing::debug!(revision = c, "compacted");
                }
                self.batches.fetch_add(1, Ordering::Relaxed);
                for (req, answer) in batch.into_iter().zip(a.answers) {
                    let _ = req.reply.send(answer);
                }
                if !a.events.is_empty() {
                    // No receivers is fine; a lagging receiver is cut off on its side.
                    let _ = self.events.send(Arc::new(a.events));
                }
                if a.checkpoint {
                    self.maintain();
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "datastore transaction failed; nothing of it was applied");
                let msg = e.to_string();
                for req in batch {
                    let _ = req.reply.send(Err(StoreError::WriteFailed(msg.clone())));
                }
            }
        }
    }
}
