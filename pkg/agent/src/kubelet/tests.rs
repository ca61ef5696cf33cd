//! Tests of the kubelet API live in `tests/tests/kubectl_stream.rs` (through the API server)
//! and in the modules (routes, options).

use super::logs::options;
use super::routes::Query;

#[test]
fn log_options_from_query() {
    let o = options(&Query::parse(Some(
        "follow=true&tailLines=5&timestamps=1&limitBytes=10&sinceTime=2026-01-01T00:00:00Z",
    )))
    .expect("options");
    assert!(o.follow && o.timestamps);
    assert_eq!(o.tail_lines, Some(5));
    assert_eq!(o.limit_bytes, Some(10));
    assert_eq!(
        o.since_nanos,
        k8slite_runtime::logs::parse_rfc3339("2026-01-01T00:00:00Z")
    );
    assert!(options(&Query::parse(Some("tailLines=-1"))).is_err());
    assert!(options(&Query::parse(Some("sinceTime=yesterday"))).is_err());
}
