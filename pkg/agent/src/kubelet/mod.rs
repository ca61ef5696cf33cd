//! The kubelet API on :10250 (TLS; only the server's client certificate is accepted):
//! containerLogs, exec, attach, portForward — proxied to the runtime's streaming server.
