//! The ACME certificates this node serves now: filled by the manager from
//! the store, read by the TLS resolver on every handshake, so a renewal
//! reaches new connections with no restart and no SIGHUP.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::sign::CertifiedKey;

/// Certificates by lower-case name (`*.example.com` for wildcards).
#[derive(Debug, Default)]
pub struct LiveCertificates {
    by_name: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl LiveCertificates {
    /// The certificate for SNI `name`: its own, else a wildcard one level up.
    pub fn find(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let map = self.by_name.read().unwrap_or_else(PoisonError::into_inner);
        if map.is_empty() {
            return None;
        }
        let name = name.to_ascii_lowercase();
        map.get(&name).cloned().or_else(|| {
            let (_, parent) = name.split_once('.')?;
            map.get(&format!("*.{parent}")).cloned()
        })
    }

    /// Serves `key` for every one of `names` from now on.
    pub fn install(&self, names: &[String], key: &Arc<CertifiedKey>) {
        let mut map = self.by_name.write().unwrap_or_else(PoisonError::into_inner);
        for name in names {
            map.insert(name.to_ascii_lowercase(), Arc::clone(key));
        }
    }
}
