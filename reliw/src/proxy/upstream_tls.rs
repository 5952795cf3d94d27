//! TLS to upstreams: a rustls client config per set of settings. Trust is
//! the webpki roots, the system's CA bundle (as RELIW trusted it:
//! `$SSL_CERT_FILE`, else `/etc/ssl/certs/ca-certificates.crt`), plus
//! `tls_cafile` and every PEM certificate in `tls_capath`; with an insecure flag, any certificate is taken (the
//! handshake signatures are still checked, so the session keys are the
//! peer's, whoever it is).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::target::UpstreamTls;

/// Builds the client config for `tls`; the error names the file at fault.
pub fn client_config(tls: &UpstreamTls) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let mut config = if tls.verify {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        roots.add_parsable_certificates(system_roots().iter().cloned());
        if let Some(file) = &tls.cafile {
            let added = add_pem_file(&mut roots, file)?;
            if added == 0 {
                return Err(format!(
                    "tls_cafile {}: no usable certificate",
                    file.display()
                ));
            }
        }
        if let Some(dir) = &tls.capath {
            let entries =
                std::fs::read_dir(dir).map_err(|e| format!("tls_capath {}: {e}", dir.display()))?;
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_file() {
                    // Not every file in a CA directory is a certificate.
                    let _ = add_pem_file(&mut roots, &path);
                }
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The system's CA bundle, read once (empty when there is none).
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: std::sync::OnceLock<Vec<CertificateDer<'static>>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let path = std::env::var_os("SSL_CERT_FILE")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::PathBuf::from(SYSTEM_BUNDLE));
        match CertificateDer::pem_file_iter(&path) {
            Ok(certs) => certs.filter_map(Result::ok).collect(),
            Err(e) => {
                tracing::debug!(bundle = %path.display(), error = %e, "no system CA bundle");
                Vec::new()
            }
        }
    })
}

/// Debian's (and most distributions') bundle of trusted CAs.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Adds every certificate in a PEM file; how many were added.
fn add_pem_file(roots: &mut RootCertStore, path: &Path) -> Result<usize, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    Ok(added)
}

/// The name the upstream's certificate must carry (and the SNI sent).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_owned()).map_err(|e| format!("{host:?}: {e}"))
}

/// Accepts any certificate (`tls_insecure` and friends).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
