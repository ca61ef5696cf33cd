//! Worker tests over `FakeRuntime` and a recording API.
