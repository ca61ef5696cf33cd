//! Process-wide glibc malloc settings. The agent's heap after a burst of work (the initial
//! lists, a proxy sync over thousands of Services, a DNS index rebuild) is mostly freed memory
//! that glibc keeps: one arena per thread that ever allocated (up to 8 × cores), and big
//! transient buffers moved into the heap by the dynamic mmap threshold. Here: at most two
//! arenas, a fixed mmap threshold (buffers of 128 KiB and more are mapped and unmapped, never
//! kept), and a trimmer thread that gives free pages back to the kernel (`malloc_trim`) once
//! the free bytes in the arenas grew by more than [`TRIM_ABOVE`] since its last trim, or grew
//! at all and then stayed put for one check (a burst of work is over: without this, up to
//! [`TRIM_ABOVE`] of freed pages per burst stayed resident for good). Checked every
//! [`TRIM_EVERY`]; nothing is done while the heap is steady.

use std::time::Duration;

/// At most this many malloc arenas (glibc's default is 8 per core).
const ARENA_MAX: i32 = 2;
/// Allocations this big or bigger are mapped on their own and returned at free.
const MMAP_THRESHOLD: i32 = 128 * 1024;
/// Growth of the arenas' free bytes since the last trim that makes the trimmer trim again.
const TRIM_ABOVE: usize = 1024 * 1024;
/// How often the trimmer looks.
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Apply the settings. Call first thing in `main`, before any thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // glibc's mallopt has no safe wrapper
pub fn tune() {
    // SAFETY: mallopt only sets malloc parameters; it is called before any other thread
    // exists, with parameters and values glibc documents.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Other targets keep their allocator's defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}

/// Free bytes held in the arenas (not yet returned to the kernel).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // glibc's mallinfo2 has no safe wrapper
fn free_in_arenas() -> usize {
    // SAFETY: mallinfo2 takes no pointers and returns a plain struct by value.
    unsafe { libc::mallinfo2() }.fordblks
}

/// Return free pages of every arena to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // glibc's malloc_trim has no safe wrapper
fn trim() {
    // SAFETY: malloc_trim takes a size and is thread-safe (it locks each arena).
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Start the trimmer thread (one `mallinfo2` every [`TRIM_EVERY`] when idle).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn start_trimmer() {
    let spawned = std::thread::Builder::new()
        .name("k8slite-trim".into())
        .spawn(|| {
            // Free bytes right after the last trim (trimmed pages still count as free), and at
            // the previous check.
            let mut trimmed = 0usize;
            let mut previous = 0usize;
            loop {
                std::thread::sleep(TRIM_EVERY);
                let free = free_in_arenas();
                if should_trim(free, trimmed, previous) {
                    trim();
                    trimmed = free_in_arenas();
                } else {
                    trimmed = trimmed.min(free);
                }
                previous = free;
            }
        });
    if let Err(e) = spawned {
        tracing::debug!("malloc trimmer not started: {e}");
    }
}

/// Whether to trim now: the free bytes grew by more than [`TRIM_ABOVE`] since the last trim
/// (`trimmed`), or grew since then and did not change since the previous check (`previous`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn should_trim(free: usize, trimmed: usize, previous: usize) -> bool {
    free > trimmed.saturating_add(TRIM_ABOVE) || (free > trimmed && free == previous)
}

/// Other targets have nothing to trim.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn start_trimmer() {}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    #[test]
    fn trims_after_a_big_growth_or_once_a_burst_settled() {
        // Steady heap: nothing to do.
        assert!(!should_trim(500, 500, 500));
        // Growing by less than TRIM_ABOVE while still changing: wait.
        assert!(!should_trim(1000, 500, 800));
        // More than TRIM_ABOVE since the last trim: trim at once.
        assert!(should_trim(500 + TRIM_ABOVE + 1, 500, 0));
        // Grew a little and then stayed put: the burst is over, trim.
        assert!(should_trim(1000, 500, 1000));
        // Shrank since the last trim: nothing to give back.
        assert!(!should_trim(400, 500, 400));
    }
}
