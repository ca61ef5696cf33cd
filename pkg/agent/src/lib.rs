//! k8slite-agent: the node agent.
