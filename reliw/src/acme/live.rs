//! The ACME certificates this node serves now: filled by the manager from
//! the store, read by the TLS resolver on every handshake, so a renewal
//! reaches new connections with no restart and no SIGHUP.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::sign::CertifiedKey;

/// Certificates by lower-case name (`*.example.com` for wildcards).
#[derive(Debug, Default)]
pub struct LiveCertificates {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_name: HashMap<String, Served>,
    /// The names each record was installed for (so a record that drops a
    /// name stops serving it).
    by_record: HashMap<String, Vec<String>>,
}

#[derive(Debug)]
struct Served {
    key: Arc<CertifiedKey>,
    /// The leaf's notAfter: past it, the name is not served from here
    /// (the files' certificate, if any, answers instead).
    not_after: i64,
}

impl LiveCertificates {
    /// The certificate issued for exactly `name` (lower case), while it
    /// is valid.
    pub fn exact(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.valid(name)
    }

    /// A wildcard certificate one label up from `name` (lower case), while
    /// it is valid.
    pub fn wildcard(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let (_, parent) = name.split_once('.')?;
        self.valid(&format!("*.{parent}"))
    }

    fn valid(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        // Without ACME certificates (most nodes) nothing more to do.
        let served = inner.by_name.get(name)?;
        (crate::shield::clock::unix_seconds() < u64::try_from(served.not_after).unwrap_or(0))
            .then(|| Arc::clone(&served.key))
    }

    /// Serves `key` (valid until `not_after`) for `names` from now on, in
    /// place of what `record` served before.
    pub fn install(&self, record: &str, names: &[String], key: &Arc<CertifiedKey>, not_after: i64) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let names: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        if let Some(old) = inner.by_record.insert(record.to_owned(), names.clone()) {
            for name in old.iter().filter(|n| !names.contains(n)) {
                inner.by_name.remove(name);
            }
        }
        for name in names {
            let served = Served {
                key: Arc::clone(key),
                not_after,
            };
            inner.by_name.insert(name, served);
        }
    }
}
