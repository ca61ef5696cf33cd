use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::{SqliteConfig, SqliteStore};
use crate::{ListOptions, Store, StoreError};

fn quiet() -> SqliteConfig {
    SqliteConfig {
        compact_interval: None,
        ..SqliteConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let dirs: Arc<Mutex<Vec<tempfile::TempDir>>> = Arc::default();
    let d2 = dirs.clone();
    crate::conformance::run_all(move || {
        let dirs = d2.clone();
        async move {
            let dir = tempfile::tempdir().expect("tmp");
            let s = SqliteStore::open(&dir.path().join("db"), quiet()).expect("open");
            dirs.lock().expect("dirs").push(dir);
            s as Arc<dyn Store>
        }
    })
    .await;
    drop(dirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_data_and_revisions_monotonic() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("db");
    let last = {
        let s = SqliteStore::open(&path, quiet()).expect("open");
        let a = s
            .create("/k/a", Bytes::from_static(b"1"))
            .await
            .expect("create");
        s.delete("/k/a", Some(a.mod_revision))
            .await
            .expect("delete");
        let b = s
            .create("/k/b", Bytes::from_static(b"2"))
            .await
            .expect("create");
        s.compact(b.mod_revision).await.expect("compact");
        s.close().await;
        b.mod_revision
    };
    let s = SqliteStore::open(&path, quiet()).expect("reopen");
    assert_eq!(s.current_revision().await.expect("rev"), last);
    assert_eq!(
        s.get("/k/b").await.expect("get").expect("b").value,
        Bytes::from_static(b"2")
    );
    let c = s
        .create("/k/c", Bytes::from_static(b"3"))
        .await
        .expect("create");
    assert!(c.mod_revision > last);
    assert!(matches!(
        s.watch("/k/", last - 2).await,
        Err(StoreError::Expired { .. })
    ));
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_batches_concurrent_writes() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = SqliteStore::open(&dir.path().join("db"), quiet()).expect("open");
    let before = s.committed_batches();
    let mut tasks = Vec::new();
    for i in 0..400 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.create(&format!("/g/{i}"), Bytes::from_static(b"v")).await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("create");
    }
    let txns = s.committed_batches() - before;
    assert!(
        txns < 400,
        "400 concurrent creates took {txns} transactions: no group commit"
    );
    assert_eq!(s.count("/g/").await.expect("count"), 400);
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_watcher_is_cut_off_writers_continue() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = SqliteConfig {
        watch_buffer: 16,
        ..quiet()
    };
    let s = SqliteStore::open(&dir.path().join("db"), cfg).expect("open");
    let now = s.current_revision().await.expect("rev");
    let mut w = s.watch("/l/", now).await.expect("watch");
    // Never read while 500 writes commit: the writers must not stall.
    let t = tokio::time::timeout(Duration::from_secs(30), async {
        for i in 0..500 {
            s.create(&format!("/l/{i}"), Bytes::from_static(b"v"))
                .await
                .expect("create");
        }
    });
    t.await.expect("writers were stalled by a slow watcher");
    let mut saw_lag = false;
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(5), w.next()).await {
        if matches!(item, Err(StoreError::WatcherLagged)) {
            saw_lag = true;
        }
    }
    assert!(saw_lag, "the slow watcher was not cut off");
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_stays_bounded_under_rewrites() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = SqliteStore::open(
        &dir.path().join("db"),
        SqliteConfig {
            retain_revisions: 10,
            ..quiet()
        },
    )
    .expect("open");
    let value = Bytes::from(vec![b'x'; 4096]);
    let mut kv = s.create("/f/one", value.clone()).await.expect("create");
    let mut sizes = Vec::new();
    // Three rounds of 1000 rewrites of one 4 KiB object, each followed by compaction and a
    // checkpoint: pages freed by compaction are reused, so the file does not grow per round.
    for _ in 0..3 {
        for _ in 0..1000 {
            kv = s
                .update("/f/one", value.clone(), kv.mod_revision)
                .await
                .expect("update");
        }
        s.compact(kv.mod_revision - 10).await.expect("compact");
        s.write(super::Op::Checkpoint).await.expect("checkpoint");
        sizes.push(s.stats().await.expect("stats").size_bytes);
    }
    let c = rusqlite::Connection::open(dir.path().join("db")).expect("inspect");
    let rows: i64 = c
        .query_row("SELECT COUNT(*) FROM log", [], |r| r.get(0))
        .expect("log rows");
    assert_eq!(
        rows, 11,
        "log rows kept: the newest at the compacted revision plus the window"
    );
    // 3000 × 4 KiB = 12 MiB were written in all.
    assert!(
        sizes[2] <= sizes[0] + 512 * 1024,
        "file grows with history: {sizes:?}"
    );
    assert!(sizes[2] < 10 * 1024 * 1024, "file {sizes:?}");
    let list = s
        .list(
            "/f/",
            ListOptions {
                revision: Some(kv.mod_revision - 5),
                ..Default::default()
            },
        )
        .await
        .expect("list in window");
    assert_eq!(list.items.len(), 1);
    s.close().await;
}
