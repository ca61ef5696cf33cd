//! The in-process components `componentstatuses` reports on: a flag per component, up while
//! its task runs on this server (the controllers and the scheduler run on the leader only).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8slite_apiserver::{ApiServer, ComponentProbe};

/// Whether a component's task runs here.
#[derive(Clone, Default)]
pub(crate) struct Running(Arc<AtomicBool>);

/// Marks the component running until dropped.
pub(crate) struct Up(Arc<AtomicBool>);

impl Drop for Up {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Running {
    /// Register this flag as `name`'s health with `api`.
    pub(crate) fn register(&self, api: &ApiServer, name: &str) {
        let flag = self.0.clone();
        let probe: ComponentProbe = Arc::new(move || {
            if flag.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("not running on this server (it runs on the leader)".to_string())
            }
        });
        api.add_component(name, probe);
    }

    /// Mark running for as long as the returned guard lives.
    pub(crate) fn up(&self) -> Up {
        self.0.store(true, Ordering::SeqCst);
        Up(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_while_the_guard_lives() {
        let r = Running::default();
        assert!(!r.0.load(Ordering::SeqCst));
        let g = r.up();
        assert!(r.0.load(Ordering::SeqCst));
        drop(g);
        assert!(!r.0.load(Ordering::SeqCst));
    }
}
