//! Unit tests of the overlay over [`RecordingNetlink`].
