use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

#[test]
fn frame_round_trip_and_corruption_detected() {
    let body = br#"{"a":1}"#;
    let framed = frame("dns", body);
    assert_eq!(unframe("dns", &framed).unwrap(), body);
    assert_eq!(unframe("settings", &framed), Err("state of another kind"));
    // Truncated.
    assert!(unframe("dns", &framed[..framed.len() - 1]).is_err());
    // One bit flipped in the body.
    let mut bad = framed.clone();
    let last = bad.len() - 2;
    bad[last] ^= 1;
    assert_eq!(unframe("dns", &bad), Err("checksum does not match"));
    assert!(unframe("dns", b"").is_err());
    assert!(unframe("dns", b"garbage\n{}").is_err());
}

#[test]
fn file_store_writes_atomically_and_bounds_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("state");
    let store = FileStore::new(&path);
    assert!(store.read().unwrap().is_none());
    store.write(b"one").unwrap();
    store.write(b"two").unwrap();
    assert_eq!(store.read().unwrap().unwrap(), b"two");
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("state")],
        "no temp file left"
    );
    std::fs::write(&path, vec![b'x'; MAX_STATE_BYTES + 1]).unwrap();
    assert!(matches!(store.read(), Err(PersistError::TooLarge { .. })));
    store.remove().unwrap();
    store.remove().unwrap();
    assert!(store.read().unwrap().is_none());
}

#[test]
fn state_file_skips_unchanged_content_and_ignores_corrupt_files() {
    let store = MemoryStore::new();
    let mut f = StateFile::new(store.clone(), "dns");
    assert!(f.load().is_none());
    assert!(f.save(b"v1").unwrap());
    assert!(!f.save(b"v1").unwrap());
    assert!(f.save(b"v2").unwrap());
    assert_eq!(store.state().writes, 2);

    // A restart with the same content: loading remembers it, so nothing is rewritten.
    let mut again = StateFile::new(store.clone(), "dns");
    assert_eq!(again.load().unwrap(), b"v2");
    assert!(!again.save(b"v2").unwrap());
    assert_eq!(store.state().writes, 2);

    // Corrupt or foreign content is ignored, never an error.
    let mut bytes = store.state().bytes.unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0x20;
    store.set(Some(bytes));
    assert!(StateFile::new(store.clone(), "dns").load().is_none());
    store.set(Some(frame("settings", b"v2")));
    assert!(StateFile::new(store.clone(), "dns").load().is_none());
}

#[test]
fn oversized_content_is_not_written_and_removes_the_stale_file() {
    let store = MemoryStore::new();
    let mut f = StateFile::new(store.clone(), "dns");
    f.save(b"small").unwrap();
    let big = vec![b'a'; MAX_STATE_BYTES];
    assert!(matches!(f.save(&big), Err(PersistError::TooLarge { .. })));
    assert!(store.state().bytes.is_none());
    assert_eq!(store.state().writes, 1);
}

#[test]
fn debounce_settles_and_limits_the_rate() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut d = Debounce::new(s(60), s(2));
    assert_eq!(d.due(), None);
    d.changed(t0);
    d.changed(t0 + s(1));
    assert_eq!(d.due(), Some(t0 + s(2)), "settle after the first change");
    d.done(t0 + s(2), true);
    assert!(!d.dirty());
    d.changed(t0 + s(3));
    assert_eq!(d.due(), Some(t0 + s(62)), "one write per interval");
    // An unchanged content is no write: the next change is not delayed by it.
    d.done(t0 + s(62), false);
    d.changed(t0 + s(200));
    assert_eq!(d.due(), Some(t0 + s(202)));
}

#[tokio::test(start_paused = true)]
async fn writer_writes_at_most_once_a_minute_and_at_the_end() {
    let store = MemoryStore::new();
    let (tx, rx) = watch::channel(0u64);
    let content = Arc::new(AtomicUsize::new(0));
    let c = content.clone();
    let task = spawn_writer(
        StateFile::new(store.clone(), "dns"),
        Debounce::new(Duration::from_secs(60), Duration::from_secs(2)),
        rx,
        move || format!("v{}", c.load(Ordering::SeqCst)).into_bytes(),
    );
    // A change every 5 s for 10 minutes.
    for i in 1..=120u64 {
        content.store(i as usize, Ordering::SeqCst);
        tx.send_replace(i);
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let during = store.state().writes;
    assert!(
        (9..=11).contains(&during),
        "one write a minute over 10 minutes, got {during}"
    );
    // A last change, then the end: it is written at once.
    content.store(1000, Ordering::SeqCst);
    tx.send_replace(1000);
    drop(tx);
    task.await.unwrap();
    let st = store.state();
    assert_eq!(st.bytes.unwrap(), frame("dns", b"v1000"));
    assert!(st.writes <= during + 1);
}

#[tokio::test(start_paused = true)]
async fn writer_does_not_write_unchanged_content() {
    let store = MemoryStore::new();
    store.set(Some(frame("dns", b"same")));
    let mut file = StateFile::new(store.clone(), "dns");
    assert!(file.load().is_some());
    let (tx, rx) = watch::channel(0u64);
    let task = spawn_writer(
        file,
        Debounce::new(Duration::from_secs(60), Duration::from_secs(2)),
        rx,
        || b"same".to_vec(),
    );
    for i in 1..=30u64 {
        tx.send_replace(i);
        tokio::time::sleep(Duration::from_secs(20)).await;
    }
    drop(tx);
    task.await.unwrap();
    assert_eq!(store.state().writes, 0, "same content: no write at all");
}
