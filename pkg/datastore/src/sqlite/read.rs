//! Reads: get, list (current or at a past revision), count, and watch.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{broadcast, mpsc};

use super::writer::{CREATED, DELETED, UPDATED};
use super::{Batch, Readers, upper};
use crate::{
    Event, EventKind, KeyValue, ListOptions, ListResult, Result, Revision, StoreError, WatchStream,
};

/// Rows replayed per query when a watch catches up from the log.
const REPLAY_PAGE: i64 = 500;

fn meta(c: &Connection, name: &str) -> Result<i64> {
    Ok(c.prepare_cached("SELECT value FROM meta WHERE name = ?1")?
        .query_row([name], |r| r.get(0))?)
}

pub(crate) fn get(c: &Connection, key: &str) -> Result<Option<KeyValue>> {
    Ok(
        c.prepare_cached("SELECT create_rev, mod_rev, value FROM kv WHERE key = ?1")?
            .query_row([key], |r| {
                Ok(KeyValue {
                    key: key.to_string(),
                    create_revision: r.get(0)?,
                    mod_revision: r.get(1)?,
                    value: Bytes::from(r.get::<_, Vec<u8>>(2)?),
                })
            })
            .optional()?,
    )
}

pub(crate) fn count(c: &Connection, prefix: &str) -> Result<u64> {
    let n: i64 = c
        .prepare_cached("SELECT COUNT(*) FROM kv WHERE key >= ?1 AND key < ?2")?
        .query_row(params![prefix, upper(prefix)], |r| r.get(0))?;
    Ok(n as u64)
}

fn row_kv(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        key: r.get(0)?,
        create_revision: r.get(1)?,
        mod_revision: r.get(2)?,
        value: Bytes::from(r.get::<_, Vec<u8>>(3)?),
    })
}

/// With `skip_count` one row more than the limit was read: drop it and report whether it was
/// there.
fn trim_extra(items: &mut Vec<KeyValue>, limit: Option<usize>) -> u64 {
    match limit {
        Some(l) if items.len() > l => {
            items.truncate(l);
            1
        }
        _ => 0,
    }
}

pub(crate) fn list(c: &Connection, prefix: &str, opts: &ListOptions) -> Result<ListResult> {
    // One read transaction: the items, the revision and the counts agree.
    let tx = c.unchecked_transaction()?;
    let current = meta(&tx, "rev")?;
    let compacted = meta(&tx, "compact")?;
    let hi = upper(prefix);
    let lo = match &opts.start_after {
        Some(s) if s.as_str() >= prefix => s.clone(),
        _ => String::new(),
    };
    // With skip_count, one extra row tells whether more follow.
    let extra = i64::from(opts.skip_count && opts.limit.is_some());
    let limit = opts.limit.map_or(-1, |l| l as i64 + extra);
    let (items, revision, remaining) = match opts.revision {
        None => {
            let items = tx
                .prepare_cached("SELECT key, create_rev, mod_rev, value FROM kv WHERE key >= ?1 AND key < ?2 AND key > ?3 ORDER BY key LIMIT ?4")?
                .query_map(params![prefix, hi, lo, limit], row_kv)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut items = items;
            let remaining = match items.last() {
                _ if opts.skip_count => trim_extra(&mut items, opts.limit),
                Some(last) if opts.limit.is_some() => tx
                    .prepare_cached("SELECT COUNT(*) FROM kv WHERE key > ?1 AND key < ?2")?
                    .query_row(params![last.key, hi], |r| r.get::<_, i64>(0))?
                    as u64,
                _ => 0,
            };
            (items, current, remaining)
        }
        Some(rev) => {
            if rev < compacted {
                return Err(StoreError::Expired {
                    requested: rev,
                    compacted,
                });
            }
            if rev > current {
                return Err(StoreError::FutureRevision {
                    requested: rev,
                    current,
                });
            }
            // The newest log row of each key at or before `rev`, unless it is a delete.
            let sql = "SELECT l.key, l.create_rev, l.rev, l.value FROM log l \
                       WHERE l.key >= ?1 AND l.key < ?2 AND l.key > ?3 AND l.kind != 2 \
                       AND l.rev = (SELECT MAX(l2.rev) FROM log l2 WHERE l2.key = l.key AND l2.rev <= ?4) \
                       ORDER BY l.key LIMIT ?5";
            let items = tx
                .prepare_cached(sql)?
                .query_map(params![prefix, hi, lo, rev, limit], row_kv)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut items = items;
            let remaining = match items.last() {
                _ if opts.skip_count => trim_extra(&mut items, opts.limit),
                Some(last) if opts.limit.is_some() => tx
                    .prepare_cached(
                        "SELECT COUNT(*) FROM log l WHERE l.key > ?1 AND l.key < ?2 AND l.kind != 2 \
                         AND l.rev = (SELECT MAX(l2.rev) FROM log l2 WHERE l2.key = l.key AND l2.rev <= ?3)",
                    )?
                    .query_row(params![last.key, hi, rev], |r| r.get::<_, i64>(0))? as u64,
                _ => 0,
            };
            (items, rev, remaining)
        }
    };
    tx.finish()?;
    Ok(ListResult {
        items,
        revision,
        remaining,
    })
}

/// Log rows for keys under `prefix` with `after < rev <= until`, at most `REPLAY_PAGE`.
fn replay_page(
    c: &Connection,
    prefix: &str,
    after: Revision,
    until: Revision,
) -> Result<Vec<Event>> {
    let mut stmt = c.prepare_cached(
        "SELECT l.rev, l.key, l.kind, l.create_rev, l.prev_rev, l.value, p.create_rev, p.value \
         FROM log l LEFT JOIN log p ON p.rev = l.prev_rev \
         WHERE l.rev > ?1 AND l.rev <= ?2 AND l.key >= ?3 AND l.key < ?4 ORDER BY l.rev LIMIT ?5",
    )?;
    let rows = stmt.query_map(
        params![after, until, prefix, upper(prefix), REPLAY_PAGE],
        |r| {
            let rev: i64 = r.get(0)?;
            let key: String = r.get(1)?;
            let kind: i64 = r.get(2)?;
            let create_rev: i64 = r.get(3)?;
            let prev_rev: Option<i64> = r.get(4)?;
            let value = Bytes::from(r.get::<_, Vec<u8>>(5)?);
            let prev_create: Option<i64> = r.get(6)?;
            let prev_value: Option<Vec<u8>> = r.get(7)?;
            let prev = match (prev_rev, prev_create, prev_value) {
                (Some(pr), Some(pc), Some(pv)) => Some(KeyValue {
                    key: key.clone(),
                    value: Bytes::from(pv),
                    create_revision: pc,
                    mod_revision: pr,
                }),
                _ => None,
            };
            let kind = match kind {
                CREATED => EventKind::Created,
                UPDATED => EventKind::Updated,
                DELETED => EventKind::Deleted,
                _ => EventKind::Updated,
            };
            Ok(Event {
                kind,
                kv: KeyValue {
                    key,
                    value,
                    create_revision: create_rev,
                    mod_revision: rev,
                },
                prev,
            })
        },
    )?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Subscribe first, then replay the log up to a snapshot revision, then stream live batches
/// with revisions above it: no gap, no duplicate.
pub(crate) async fn watch(
    readers: Arc<Readers>,
    mut live: broadcast::Receiver<Batch>,
    compacted_hint: Revision,
    buffer: usize,
    prefix: &str,
    after: Revision,
) -> Result<WatchStream> {
    if after < compacted_hint {
        return Err(StoreError::Expired {
            requested: after,
            compacted: compacted_hint,
        });
    }
    let r = readers.clone();
    let (snapshot, compacted) =
        tokio::task::spawn_blocking(move || r.with(|c| Ok((meta(c, "rev")?, meta(c, "compact")?))))
            .await
            .map_err(|_| StoreError::Closed)??;
    if after < compacted {
        return Err(StoreError::Expired {
            requested: after,
            compacted,
        });
    }
    let (tx, rx) = mpsc::channel::<Result<Vec<Event>>>(buffer.max(1));
    let prefix = prefix.to_string();
    tokio::spawn(async move {
        let mut from = after;
        while from < snapshot {
            let r = readers.clone();
            let p = prefix.clone();
            let page = match tokio::task::spawn_blocking(move || {
                r.with(|c| replay_page(c, &p, from, snapshot))
            })
            .await
            {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                Err(_) => {
                    let _ = tx.send(Err(StoreError::Closed)).await;
                    return;
                }
            };
            let full = page.len() as i64 == REPLAY_PAGE;
            let Some(last) = page.last().map(Event::revision) else {
                break;
            };
            from = last;
            // One batch per revision, as live commits of single writes arrive.
            for ev in page {
                if tx.send(Ok(vec![ev])).await.is_err() {
                    return;
                }
            }
            if !full {
                break;
            }
        }
        loop {
            match live.recv().await {
                Ok(batch) => {
                    let evs: Vec<Event> = batch
                        .iter()
                        .filter(|e| e.revision() > snapshot && e.kv.key.starts_with(&prefix))
                        .cloned()
                        .collect();
                    if evs.is_empty() {
                        continue;
                    }
                    match tx.try_send(Ok(evs)) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            // The consumer cannot keep up: cut it off rather than buffer.
                            let _ = tx.send(Err(StoreError::WatcherLagged)).await;
                            return;
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let _ = tx.send(Err(StoreError::WatcherLagged)).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    let _ = tx.send(Err(StoreError::Closed)).await;
                    return;
                }
            }
        }
    });
    Ok(tokio_stream_like(rx))
}

fn tokio_stream_like(rx: mpsc::Receiver<Result<Vec<Event>>>) -> WatchStream {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) }).boxed()
}
