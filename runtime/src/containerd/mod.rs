//! containerd as a child process: the generated config (own root/state/socket, CNI dirs, the
//! pause image, cgroupfs driver, oom-score handling from the host's capabilities) and a
//! supervisor that restarts it when it dies.
