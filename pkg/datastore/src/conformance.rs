//! One backend-agnostic conformance suite for [`Store`]: every backend (SQLite now, etcd later)
//! runs the same cases. Each case takes a fresh, empty store.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::{EventKind, ListOptions, Store, StoreError};

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

async fn next_events(w: &mut crate::WatchStream) -> Vec<crate::Event> {
    match tokio::time::timeout(Duration::from_secs(5), w.next()).await {
        Ok(Some(Ok(evs))) => evs,
        other => panic!("expected watch events, got {other:?}"),
    }
}

/// Create, get, duplicate create, update with right and stale revisions, delete.
pub async fn crud(s: Arc<dyn Store>) {
    let kv = s.create("/a/x", b("1")).await.expect("create");
    assert_eq!(kv.create_revision, kv.mod_revision);
    assert!(matches!(
        s.create("/a/x", b("2")).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(
        s.get("/a/x").await.expect("get").expect("present").value,
        b("1")
    );
    assert!(s.get("/a/none").await.expect("get").is_none());
    let up = s
        .update("/a/x", b("2"), kv.mod_revision)
        .await
        .expect("update");
    assert!(up.mod_revision > kv.mod_revision);
    assert_eq!(up.create_revision, kv.create_revision);
    match s.update("/a/x", b("3"), kv.mod_revision).await {
        Err(StoreError::Conflict { current, .. }) => assert_eq!(current.value, b("2")),
        other => panic!("expected conflict, got {other:?}"),
    }
    assert!(matches!(
        s.update("/a/none", b("1"), 1).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.delete("/a/x", Some(kv.mod_revision)).await,
        Err(StoreError::Conflict { .. })
    ));
    let del = s
        .delete("/a/x", Some(up.mod_revision))
        .await
        .expect("delete");
    assert_eq!(del.value, b("2"));
    assert!(del.mod_revision > up.mod_revision);
    assert!(s.get("/a/x").await.expect("get").is_none());
    assert!(matches!(
        s.delete("/a/x", None).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.current_revision().await.expect("rev"), del.mod_revision);
}

/// Prefix isolation, order, pagination, counts.
pub async fn list_and_paginate(s: Arc<dyn Store>) {
    for k in ["/a/3", "/a/1", "/a/2", "/ab/1", "/b/1"] {
        s.create(k, b(k)).await.expect("create");
    }
    let all = s.list("/a/", ListOptions::default()).await.expect("list");
    let keys: Vec<&str> = all.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, vec!["/a/1", "/a/2", "/a/3"]);
    assert_eq!(all.revision, s.current_revision().await.expect("rev"));
    assert_eq!(s.count("/a/").await.expect("count"), 3);
    let p1 = s
        .list(
            "/a/",
            ListOptions {
                limit: Some(2),
                ..Default::default()
            },
        )
        .await
        .expect("page 1");
    assert_eq!(p1.items.len(), 2);
    assert_eq!(p1.remaining, 1);
    let p2 = s
        .list(
            "/a/",
            ListOptions {
                limit: Some(2),
                start_after: Some(p1.items[1].key.clone()),
                revision: Some(p1.revision),
                skip_count: false,
            },
        )
        .await
        .expect("page 2");
    assert_eq!(
        p2.items
            .iter()
            .map(|kv| kv.key.as_str())
            .collect::<Vec<_>>(),
        vec!["/a/3"]
    );
    assert_eq!(p2.remaining, 0);
    // skip_count only says whether more follow
    let q1 = s
        .list(
            "/a/",
            ListOptions {
                limit: Some(1),
                skip_count: true,
                ..Default::default()
            },
        )
        .await
        .expect("page without count");
    assert_eq!((q1.items.len(), q1.remaining), (1, 1));
    let q2 = s
        .list(
            "/a/",
            ListOptions {
                limit: Some(3),
                skip_count: true,
                ..Default::default()
            },
        )
        .await
        .expect("last page without count");
    assert_eq!((q2.items.len(), q2.remaining), (3, 0));
}

/// The state at a past revision, after updates and deletes; expired and future revisions.
pub async fn list_at_revision(s: Arc<dyn Store>) {
    let a = s.create("/p/a", b("a1")).await.expect("a");
    let bb = s.create("/p/b", b("b1")).await.expect("b");
    let snapshot = s.current_revision().await.expect("rev");
    s.update("/p/a", b("a2"), a.mod_revision)
        .await
        .expect("update a");
    s.delete("/p/b", Some(bb.mod_revision))
        .await
        .expect("delete b");
    s.create("/p/c", b("c1")).await.expect("c");
    let then = s
        .list(
            "/p/",
            ListOptions {
                revision: Some(snapshot),
                ..Default::default()
            },
        )
        .await
        .expect("list at snapshot");
    let got: Vec<(String, Bytes)> = then
        .items
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect();
    assert_eq!(
        got,
        vec![("/p/a".to_string(), b("a1")), ("/p/b".to_string(), b("b1"))]
    );
    assert_eq!(then.revision, snapshot);
    let now = s
        .list("/p/", ListOptions::default())
        .await
        .expect("list now");
    assert_eq!(
        now.items
            .iter()
            .map(|kv| kv.key.as_str())
            .collect::<Vec<_>>(),
        vec!["/p/a", "/p/c"]
    );
    let cur = s.current_revision().await.expect("rev");
    assert!(matches!(
        s.list(
            "/p/",
            ListOptions {
                revision: Some(cur + 10),
                ..Default::default()
            }
        )
        .await,
        Err(StoreError::FutureRevision { .. })
    ));
    s.compact(cur - 1).await.expect("compact");
    assert!(matches!(
        s.list(
            "/p/",
            ListOptions {
                revision: Some(snapshot),
                ..Default::default()
            }
        )
        .await,
        Err(StoreError::Expired { .. })
    ));
    // After compaction the state at the compacted revision is still complete.
    let at = s
        .list(
            "/p/",
            ListOptions {
                revision: Some(cur - 1),
                ..Default::default()
            },
        )
        .await
        .expect("at compacted rev");
    assert_eq!(
        at.items
            .iter()
            .map(|kv| kv.key.as_str())
            .collect::<Vec<_>>(),
        vec!["/p/a"]
    );
    let st = s.stats().await.expect("stats");
    assert_eq!(st.compact_revision, cur - 1);
}

/// Watch from a past revision replays then streams live, filtered by prefix, without gaps or
/// duplicates; deletes carry the last value and the delete's revision.
pub async fn watch_replay_and_live(s: Arc<dyn Store>) {
    let start = s.current_revision().await.expect("rev");
    let x = s.create("/w/x", b("1")).await.expect("x");
    s.create("/other/y", b("1")).await.expect("y");
    let x2 = s.update("/w/x", b("2"), x.mod_revision).await.expect("x2");
    let mut w = s.watch("/w/", start).await.expect("watch");
    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(next_events(&mut w).await);
    }
    assert_eq!(got[0].kind, EventKind::Created);
    assert_eq!(got[1].kind, EventKind::Updated);
    assert_eq!(got[1].prev.as_ref().map(|p| p.value.clone()), Some(b("1")));
    let del = s.delete("/w/x", None).await.expect("delete");
    s.create("/other/z", b("1")).await.expect("z");
    let z = s.create("/w/z", b("1")).await.expect("w z");
    let mut live = Vec::new();
    while live.len() < 2 {
        live.extend(next_events(&mut w).await);
    }
    assert_eq!(live[0].kind, EventKind::Deleted);
    assert_eq!(live[0].kv.value, b("2"));
    assert_eq!(live[0].kv.mod_revision, del.mod_revision);
    assert_eq!(live[1].kv.key, "/w/z");
    assert_eq!(live[1].kv.mod_revision, z.mod_revision);
    let revs: Vec<i64> = got
        .iter()
        .chain(live.iter())
        .map(|e| e.revision())
        .collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "in order: {revs:?}");
    assert!(revs.contains(&x2.mod_revision));
    // A watch from the current revision sees only new events.
    let now = s.current_revision().await.expect("rev");
    let mut w2 = s.watch("/w/", now).await.expect("watch now");
    s.create("/w/n", b("1")).await.expect("n");
    let evs = next_events(&mut w2).await;
    assert_eq!(evs[0].kv.key, "/w/n");
}

/// Watching from a compacted revision answers Expired.
pub async fn watch_expired(s: Arc<dyn Store>) {
    let first = s.create("/e/1", b("1")).await.expect("create");
    for i in 0..5 {
        s.create(&format!("/e/{}", i + 2), b("x"))
            .await
            .expect("create");
    }
    let cur = s.current_revision().await.expect("rev");
    s.compact(cur).await.expect("compact");
    assert!(matches!(
        s.watch("/e/", first.mod_revision).await,
        Err(StoreError::Expired { .. })
    ));
    assert!(
        s.watch("/e/", cur).await.is_ok(),
        "watching from the compacted revision itself is fine"
    );
}

/// Concurrent creates all get distinct revisions and are all listed.
pub async fn concurrent_creates(s: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for i in 0..200 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.create(&format!("/c/{i:03}"), b("v")).await
        }));
    }
    let mut revs = Vec::new();
    for t in tasks {
        revs.push(t.await.expect("task").expect("create").mod_revision);
    }
    revs.sort_unstable();
    revs.dedup();
    assert_eq!(revs.len(), 200, "distinct revisions");
    assert_eq!(s.count("/c/").await.expect("count"), 200);
}

/// Run every case, each on a fresh store from `factory`.
pub async fn run_all<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Store>>,
{
    crud(factory().await).await;
    list_and_paginate(factory().await).await;
    list_at_revision(factory().await).await;
    watch_replay_and_live(factory().await).await;
    watch_expired(factory().await).await;
    concurrent_creates(factory().await).await;
}
