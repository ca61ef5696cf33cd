//! The kubelet API's pod tunnel, as both ends speak it: the API server sends
//! `POST /k8slite/tunnel?ip=<pod-ip>&port=<port>` with `Connection: Upgrade` and
//! `Upgrade: k8slite-tunnel` over its TLS connection to the node's kubelet API; the node checks
//! that the address belongs to a pod it runs (else `403`), connects to it (else `502` with the
//! dial error as text) and answers `101 Switching Protocols`, after which the connection
//! carries the pod connection's bytes both ways (`pods/proxy`, `services/proxy`).

use std::net::SocketAddr;

/// The `Upgrade` protocol token of the tunnel.
pub const UPGRADE: &str = "k8slite-tunnel";
/// The path of the tunnel endpoint on the kubelet API.
pub const PATH: &str = "/k8slite/tunnel";

/// The request target (path and query) of a tunnel to `addr`.
pub fn request_target(addr: SocketAddr) -> String {
    format!("{PATH}?ip={}&port={}", addr.ip(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let v4: SocketAddr = "10.42.0.5:80".parse().expect("addr");
        assert_eq!(request_target(v4), "/k8slite/tunnel?ip=10.42.0.5&port=80");
        let v6: SocketAddr = "[fd00::5]:8443".parse().expect("addr");
        assert_eq!(request_target(v6), "/k8slite/tunnel?ip=fd00::5&port=8443");
    }
}
