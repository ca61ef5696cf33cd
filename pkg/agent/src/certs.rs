//! The node's own certificates: its client certificate (`system:node:<name>`, group
//! `system:nodes`) and kubelet serving certificate, fetched from the server at join with the
//! token and kept in the data dir for restarts.
