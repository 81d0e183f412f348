//! What `/readyz` answers: the configuration is loaded and every store answered its last probe.
//! Shared between the probe task (writer) and the HTTP endpoint (reader).

use std::collections::BTreeMap;
use std::sync::Mutex;

/// One store's state at its last probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreHealth {
    /// The store answered.
    pub reachable: bool,
    /// What it answered, or why it could not be reached (never a secret).
    pub detail: String,
}

/// Readiness of the daemon.
#[derive(Debug, Default)]
pub struct Health {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    config_loaded: bool,
    probed: bool,
    stores: BTreeMap<String, StoreHealth>,
}

impl Health {
    /// Marks the configuration as loaded.
    pub fn set_config_loaded(&self) {
        self.with(|i| i.config_loaded = true);
    }

    /// Records a complete probe of every configured store (stores not in `stores` are forgotten).
    pub fn set_stores(&self, stores: BTreeMap<String, StoreHealth>) {
        self.with(|i| {
            i.stores = stores;
            i.probed = true;
        });
    }

    /// Whether the first probe finished: until then the metrics do not yet hold what the stores say.
    pub fn recovered(&self) -> bool {
        match self.inner.lock() {
            Ok(g) => g.probed,
            Err(poisoned) => poisoned.into_inner().probed,
        }
    }

    /// Ready, and a human-readable explanation (one line per store).
    pub fn readiness(&self) -> (bool, String) {
        let guard = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !guard.config_loaded {
            return (false, "configuration not loaded\n".into());
        }
        if !guard.probed {
            return (false, "stores not probed yet\n".into());
        }
        let mut text = String::new();
        let mut ready = true;
        for (name, h) in &guard.stores {
            ready &= h.reachable;
            text.push_str(&format!(
                "store {name}: {} ({})\n",
                if h.reachable {
                    "reachable"
                } else {
                    "UNREACHABLE"
                },
                h.detail
            ));
        }
        (ready, text)
    }

    fn with(&self, f: impl FnOnce(&mut Inner)) {
        let mut guard = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_loaded_probed_and_every_store_reachable() {
        let h = Health::default();
        assert!(!h.readiness().0);
        h.set_config_loaded();
        assert_eq!(h.readiness(), (false, "stores not probed yet\n".into()));
        let mut stores = BTreeMap::new();
        stores.insert(
            "a".to_owned(),
            StoreHealth {
                reachable: true,
                detail: "Object Lock enabled".into(),
            },
        );
        h.set_stores(stores.clone());
        assert!(h.readiness().0);
        stores.insert(
            "b".to_owned(),
            StoreHealth {
                reachable: false,
                detail: "connection refused".into(),
            },
        );
        h.set_stores(stores);
        let (ready, text) = h.readiness();
        assert!(!ready);
        assert!(
            text.contains("store b: UNREACHABLE (connection refused)"),
            "{text}"
        );
    }
}
