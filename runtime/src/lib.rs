//! k8slite-runtime: container runtimes behind one trait.
