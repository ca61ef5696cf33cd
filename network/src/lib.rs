//! k8slite-network: the pod network of one node — the CNI conflist for the node's pod CIDR
//! (bridge + host-local with its own dataDir + portmap + loopback, the distro's plugins) and the
//! host settings it needs (iptables on PATH, forwarding). Cross-node routes, the service proxy
//! and node-local DNS come later.
