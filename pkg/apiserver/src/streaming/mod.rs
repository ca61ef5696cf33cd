//! `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward`: proxied to the node's kubelet
//! API, with WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`) towards kubectl and the
//! SPDY-over-WebSocket tunnel kubectl uses for port-forward.
