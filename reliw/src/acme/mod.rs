//! Certificates for the whole fleet from an ACME CA (RFC 8555), kept in
//! the shared store so that one node orders and every node serves.
//!
//! Every node runs the same loop, every `ssl.acme.check_interval`:
//!
//! 1. Read each configured certificate's record (`P:ACME:CERT:<first
//!    name>`, see `record`) and serve it if it changed ([`LiveCertificates`],
//!    read by the TLS resolver on each handshake: no restart, no SIGHUP).
//! 2. If the record is missing, names other names, or is within its
//!    renewal window, take the lock `P:ACME:LOCK:<first name>` (SET NX of
//!    a random value with an expiry longer than an order can take, so a
//!    node that dies mid-order frees it). The node that gets it reads the
//!    record again (another node may just have stored one), orders
//!    (`order`), stores the chain with its key sealed under
//!    `ssl.acme.key_file` (`sealed`) and lets the lock go; the others pick
//!    the record up on their next look.
//! 3. A failed order sets `P:ACME:RETRY:<first name>` for a backoff that
//!    doubles with the failures of the last day (`P:ACME:FAILS:<first
//!    name>`), from one minute up to six hours. Every node honours it, so
//!    the fleet, not each node, stays within a CA's failed-validation
//!    limits.
//!
//! The account is made once per directory and kept, sealed, at
//! `P:ACME:ACCOUNT:<directory URL>`. Files in `ssl.default`/`ssl.hosts`
//! keep working: an ACME certificate, when there is one, is preferred for
//! its names.

pub mod live;
mod order;
mod record;
mod sealed;
mod validity;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use instant_acme::{Account, AccountCredentials, NewAccount};

pub use live::LiveCertificates;
use record::Record;
use sealed::Sealer;

use crate::config::{AcmeCertificate, AcmeConfig, Config};
use crate::metrics::NodeMetrics;
use crate::store::{Backend, Keys, Store as _, StoreSpec};

/// How long a node may hold an order's lock, beyond the order's own
/// bounded steps (see [`Manager::lock_ttl`]); a node that died holding it
/// frees the name after this.
const LOCK_MARGIN: Duration = Duration::from_secs(5 * 60);
/// The shortest and longest waits after a failed order.
const MIN_BACKOFF: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);
/// Failures count toward the backoff for a day after the first.
const FAILURE_MEMORY: Duration = Duration::from_secs(86_400);

/// Why ACME cannot start (start-up stops).
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ssl.acme.key_file: {0}")]
    Key(String),
    #[error("starting the ACME manager: {0}")]
    Start(#[from] std::io::Error),
}

/// Starts the manager thread when `ssl.acme` is set and can run (else
/// start-up has warned why not): `true` when it runs.
pub fn spawn(
    config: &Config,
    store: &StoreSpec,
    live: &Arc<LiveCertificates>,
    metrics: &Arc<NodeMetrics>,
) -> Result<bool, AcmeError> {
    let Some(acme) = config.ssl.as_ref().and_then(|s| s.acme.clone()) else {
        return Ok(false);
    };
    if acme.not_run_because(config.store.backend).is_some() {
        return Ok(false);
    }
    let path = acme.key_file.clone().unwrap_or_default();
    let text = std::fs::read_to_string(&path)
        .map_err(|e| AcmeError::Key(format!("{}: {e}", path.display())))?;
    let sealer = Sealer::from_key_text(&text)
        .map_err(|e| AcmeError::Key(format!("{}: {e}", path.display())))?;
    let manager = Manager {
        acme,
        sealer,
        keys: Keys::new(&config.redis.prefix),
        live: Arc::clone(live),
        metrics: Arc::clone(metrics),
        served: HashMap::new(),
        account: None,
    };
    let store = store.clone();
    crate::background::spawn("reliw-acme", move || async move {
        match store.open() {
            Ok(Some(backend)) => manager.run(&backend).await,
            Ok(None) => tracing::error!("acme: no store to keep certificates in; ACME is off"),
            Err(e) => tracing::error!(error = %e, "acme: cannot open the store; ACME is off"),
        }
    })?;
    Ok(true)
}

/// One node's ACME state.
struct Manager {
    acme: AcmeConfig,
    sealer: Sealer,
    keys: Keys,
    live: Arc<LiveCertificates>,
    metrics: Arc<NodeMetrics>,
    /// The chain served now, by record key (to install only changes).
    served: HashMap<String, String>,
    account: Option<Account>,
}

impl Manager {
    async fn run(mut self, store: &Backend) {
        let names: Vec<&str> = self
            .acme
            .certificates
            .iter()
            .map(|c| c.names[0].as_str())
            .collect();
        tracing::info!(certificates = ?names, directory = self.acme.directory, "acme: managing certificates");
        let interval = Duration::from_secs_f64(self.acme.check_interval);
        loop {
            for cert in self.acme.certificates.clone() {
                self.tend(store, &cert).await;
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// The stored record of `cert`: `Err` when the store cannot say.
    async fn stored(&self, store: &Backend, cert: &AcmeCertificate) -> Result<Option<Record>, ()> {
        let key = self.keys.acme_certificate(&cert.names[0]);
        match store.hgetall(&key).await {
            Ok(pairs) => Ok(Record::from_fields(&pairs)),
            Err(e) => {
                tracing::warn!(certificate = cert.names[0], error = %e, "acme: cannot read the stored certificate");
                Err(())
            }
        }
    }

    /// Whether `record` (or its absence) calls for an order now.
    fn is_due(&self, record: Option<&Record>, cert: &AcmeCertificate) -> bool {
        let renew_time = i64::try_from(self.acme.renew_time).unwrap_or(i64::MAX);
        record.is_none_or(|r| r.is_due(unix_now(), renew_time, &cert.names))
    }

    /// Steps 1 to 3 of the module doc for one certificate.
    async fn tend(&mut self, store: &Backend, cert: &AcmeCertificate) {
        let first = cert.names[0].as_str();
        let key = self.keys.acme_certificate(first);
        let Ok(record) = self.stored(store, cert).await else {
            return;
        };
        if let Some(r) = &record {
            self.serve(&key, r, cert);
        }
        if !self.is_due(record.as_ref(), cert) {
            return;
        }
        match store.get(&self.keys.acme_retry(first)).await {
            Ok(None) => {}
            Ok(Some(_)) => return,
            Err(e) => {
                tracing::warn!(certificate = first, error = %e, "acme: cannot read the retry time");
                return;
            }
        }
        let lock = self.keys.acme_lock(first);
        let Some(token) = lock_token() else {
            tracing::error!("acme: no randomness for a lock token");
            return;
        };
        match store
            .set_nx_with_ttl(&lock, token.as_bytes(), self.lock_ttl(cert))
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(certificate = first, "acme: another node is ordering");
                return;
            }
            Err(e) => {
                tracing::warn!(certificate = first, error = %e, "acme: cannot take the order lock");
                return;
            }
        }
        // Between the first read and the lock another node may have
        // stored a new certificate and let the lock go.
        match self.stored(store, cert).await {
            Ok(again) if self.is_due(again.as_ref(), cert) => {
                self.order_locked(store, cert, again.as_ref()).await;
            }
            Ok(Some(fresh)) => self.serve(&key, &fresh, cert),
            Ok(None) | Err(()) => {}
        }
        if let Err(e) = store.del_if(&lock, token.as_bytes()).await {
            tracing::warn!(certificate = first, error = %e, "acme: cannot free the order lock (it expires by itself)");
        }
    }

    /// The order itself, under the lock, with its logs, metrics and, when
    /// it fails, the fleet's backoff.
    async fn order_locked(
        &mut self,
        store: &Backend,
        cert: &AcmeCertificate,
        record: Option<&Record>,
    ) {
        let first = cert.names[0].as_str();
        let key = self.keys.acme_certificate(first);
        let reason = match record {
            None => "none stored",
            Some(r) if r.names != cert.names => "names changed",
            Some(_) => "renewal window",
        };
        tracing::info!(certificate = first, reason, "acme: ordering");
        let started = Instant::now();
        match self.order(store, cert, &key).await {
            Ok(record) => {
                self.metrics
                    .acme_orders
                    .get_or_create(&[("result", "issued")])
                    .inc();
                tracing::info!(
                    certificate = first,
                    not_after = record.not_after,
                    took_ms = started.elapsed().as_millis() as u64,
                    "acme: certificate issued and stored"
                );
                let _ = store.del(&self.keys.acme_failures(first)).await;
                self.serve(&key, &record, cert);
            }
            Err(e) => {
                self.metrics
                    .acme_orders
                    .get_or_create(&[("result", "failed")])
                    .inc();
                // The next attempt reads the account again (it may be
                // what failed).
                self.account = None;
                let failures = store
                    .incr_window(&self.keys.acme_failures(first), FAILURE_MEMORY)
                    .await
                    .unwrap_or(1);
                let wait = self.backoff(failures);
                if let Err(e) = store
                    .set_with_ttl(
                        &self.keys.acme_retry(first),
                        failures.to_string().as_bytes(),
                        wait,
                    )
                    .await
                {
                    tracing::warn!(certificate = first, error = %e, "acme: cannot store the retry time");
                }
                tracing::error!(certificate = first, error = %e, failures, retry_in_s = wait.as_secs(), "acme: order failed");
            }
        }
    }

    /// The wait after the `failures`-th failure of a day: one check
    /// interval doubled per failure, within a minute and six hours.
    fn backoff(&self, failures: i64) -> Duration {
        let doublings = u32::try_from(failures.clamp(1, 16)).unwrap_or(16);
        Duration::from_secs_f64(self.acme.check_interval)
            .saturating_mul(1 << doublings)
            .clamp(MIN_BACKOFF, MAX_BACKOFF)
    }

    /// How long the lock for ordering `cert` is held at most: every
    /// bounded step of an order (the DNS hook per name, the DNS wait, the
    /// CA's validation and issuance), plus a margin for the requests.
    fn lock_ttl(&self, cert: &AcmeCertificate) -> Duration {
        let dns = match cert.challenge() {
            crate::config::AcmeChallenge::Dns01 => {
                order::HOOK_TIMEOUT.saturating_mul(2 * cert.names.len() as u32)
                    + Duration::from_secs_f64(self.acme.dns_wait)
            }
            crate::config::AcmeChallenge::Http01 => Duration::ZERO,
        };
        LOCK_MARGIN + dns + order::POLL_TIMEOUT * 2
    }

    /// Orders `cert` and stores it: the stored record.
    async fn order(
        &mut self,
        store: &Backend,
        cert: &AcmeCertificate,
        key: &str,
    ) -> Result<Record, String> {
        let account = self.account(store).await?;
        let issued = order::issue(&account, cert, &self.acme, store, &self.keys).await?;
        let record = Record::seal(
            issued.chain_pem,
            &issued.key_pem,
            &cert.names,
            &self.sealer,
            key,
        )?;
        // Kept a week past expiry, then gone by itself.
        let ttl = Duration::from_secs(
            u64::try_from(record.not_after - unix_now()).unwrap_or(0) + 7 * 86_400,
        );
        let fields = record.fields();
        let fields: Vec<(&str, &[u8])> = fields.iter().map(|(f, v)| (*f, v.as_slice())).collect();
        store
            .hset_with_ttl(key, &fields, ttl)
            .await
            .map_err(|e| format!("storing the certificate: {e}"))?;
        Ok(record)
    }

    /// The account: this process's, the stored one, or a new one (stored
    /// unless another node stored one first, which is then used).
    async fn account(&mut self, store: &Backend) -> Result<Account, String> {
        if let Some(a) = &self.account {
            return Ok(a.clone());
        }
        let key = self.keys.acme_account(&self.acme.directory);
        let stored = store
            .get(&key)
            .await
            .map_err(|e| format!("reading the account: {e}"))?;
        let account = match stored {
            Some(sealed) => match self.stored_account(&key, &sealed).await {
                Ok(account) => account,
                Err(e) => {
                    // Sealed with another key, or altered: unusable for
                    // every node; a new one replaces it.
                    tracing::error!(error = %e, "acme: the stored account cannot be used; creating a new one");
                    self.new_account(store, &key, true).await?
                }
            },
            None => self.new_account(store, &key, false).await?,
        };
        self.account = Some(account.clone());
        Ok(account)
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder, String> {
        match &self.acme.ca_file {
            Some(ca) => Account::builder_with_root(ca),
            None => Account::builder(),
        }
        .map_err(|e| format!("ACME HTTP client: {e}"))
    }

    async fn stored_account(&self, key: &str, sealed: &[u8]) -> Result<Account, String> {
        let text = std::str::from_utf8(sealed).map_err(|_| String::from("not text"))?;
        let json = self.sealer.open(text, key)?;
        let credentials: AccountCredentials =
            serde_json::from_slice(&json).map_err(|e| format!("the stored account: {e}"))?;
        self.builder()?
            .from_credentials(credentials)
            .await
            .map_err(|e| format!("the stored account: {e}"))
    }

    /// A new account, stored sealed; `replace`: over an unusable one.
    async fn new_account(
        &self,
        store: &Backend,
        key: &str,
        replace: bool,
    ) -> Result<Account, String> {
        let contact: Vec<String> = self
            .acme
            .account
            .iter()
            .map(|m| format!("mailto:{m}"))
            .collect();
        let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, credentials) = self
            .builder()?
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.acme.directory.clone(),
                None,
            )
            .await
            .map_err(|e| format!("creating the account: {e}"))?;
        let json = serde_json::to_vec(&credentials).map_err(|e| e.to_string())?;
        let sealed = self.sealer.seal(&json, key)?;
        let kept = Duration::from_secs(10 * 365 * 86_400);
        let stored = if replace {
            store
                .set_with_ttl(key, sealed.as_bytes(), kept)
                .await
                .map(|()| true)
        } else {
            store.set_nx_with_ttl(key, sealed.as_bytes(), kept).await
        };
        match stored.map_err(|e| format!("storing the account: {e}"))? {
            true => {
                tracing::info!(account = account.id(), "acme: account created");
                Ok(account)
            }
            // Another node stored its account first: the fleet uses one.
            false => {
                let theirs = store
                    .get(key)
                    .await
                    .map_err(|e| format!("reading the account: {e}"))?
                    .ok_or("the stored account vanished")?;
                self.stored_account(key, &theirs).await
            }
        }
    }

    /// Serves `record` for `cert`'s names from now on, unless it is what is
    /// served already; only names its certificate covers.
    fn serve(&mut self, key: &str, record: &Record, cert: &AcmeCertificate) {
        if self.served.get(key) == Some(&record.chain_pem) {
            return;
        }
        match record.certified_key(&self.sealer, key, &cert.names) {
            Ok(certified) => {
                self.live
                    .install(key, &cert.names, &certified, record.leaf.not_after);
                self.served.insert(key.to_owned(), record.chain_pem.clone());
                self.metrics
                    .acme_not_after
                    .get_or_create(&vec![("certificate", cert.names[0].clone())])
                    .set(record.leaf.not_after);
                tracing::info!(names = ?cert.names, not_after = record.leaf.not_after, "acme: serving certificate");
            }
            Err(e) => {
                tracing::error!(key, error = %e, "acme: the stored certificate cannot be used")
            }
        }
    }
}

fn unix_now() -> i64 {
    i64::try_from(crate::shield::clock::unix_seconds()).unwrap_or(i64::MAX)
}

/// A value only this attempt holds the lock with (nodes do not share
/// process ids or clocks reliably).
fn lock_token() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
