//! Pod volumes: the agent's side of `k8slite-storage` (API objects fetched with the agent's
//! client, mounts handed to the runtime).
