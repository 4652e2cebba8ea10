//! TLS as libpq's `sslmode` means it, over rustls with the `ring` provider: built once per pool.
//!
//! | `sslmode` | TLS | server certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `allow`, `prefer` | if the server accepts it, else plain | not checked |
//! | `require` | always | not checked; with `sslrootcert`, as `verify-ca` (libpq does the same) |
//! | `verify-ca` | always | chain to a CA of `sslrootcert` |
//! | `verify-full` | always | chain to a CA of `sslrootcert`, and it names the host (an IP address host: in its IP SANs) |
//!
//! Whatever the mode, the handshake's signatures are checked against the certificate's key, and SCRAM
//! authentication binds itself to that certificate (`SCRAM-SHA-256-PLUS`, `tls-server-end-point`) when
//! the server offers it, so a man in the middle cannot relay the password exchange even where the
//! certificate itself is not checked. Over a Unix socket there is no TLS (PostgreSQL offers none there;
//! libpq ignores `sslmode` for sockets too).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pgconn_config::{ConnParams, Host, SslMode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::Error;

/// What the pool checks of a server's certificate, from `sslmode` and `sslrootcert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verify {
    /// `allow`, `prefer`, and `require` without `sslrootcert`: encrypted, the certificate not checked.
    Nothing,
    /// `verify-ca`, and `require` with `sslrootcert`: the chain must lead to a CA in the file.
    Ca(PathBuf),
    /// `verify-full`: the chain, and the certificate must name the host.
    Full(PathBuf),
}

/// The TLS side of a connector: the rustls configuration (cloned per connect: an `Arc`) and what it
/// checks, for messages.
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) connect: MakeRustlsConnect,
    pub(crate) verify: Verify,
}

impl Tls {
    /// The TLS configuration for `params`; `None` when no connection to them can use TLS (`disable`, or
    /// only Unix sockets). `var` names the variable the parameters came from, for messages.
    ///
    /// # Errors
    /// When `sslrootcert` is needed and cannot be read, holds no certificate, or holds one that is not
    /// a usable CA certificate.
    pub(crate) fn new(params: &ConnParams, var: &str) -> Result<Option<Tls>, Error> {
        if params.sslmode == SslMode::Disable || only_sockets(params) {
            return Ok(None);
        }
        let verify = match (params.sslmode, &params.sslrootcert) {
            (SslMode::VerifyFull, Some(path)) => Verify::Full(path.clone()),
            (SslMode::VerifyCa | SslMode::Require, Some(path)) => Verify::Ca(path.clone()),
            (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
                // pgconn-config refuses this; a `Settings` built by hand could still say it.
                return Err(Error::Unsupported(format!(
                    "{var} has sslmode={} but no sslrootcert=PATH naming the CA certificate",
                    params.sslmode
                )));
            }
            _ => Verify::Nothing,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Unsupported(format!("cannot set up TLS: {e}")))?;
        let algorithms = provider.signature_verification_algorithms;
        let mut config = match &verify {
            Verify::Nothing => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NameUnchecked { roots: None, algorithms }))
                .with_no_client_auth(),
            Verify::Ca(path) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NameUnchecked {
                    roots: Some(Arc::new(load_roots(path, var)?)),
                    algorithms,
                }))
                .with_no_client_auth(),
            Verify::Full(path) => {
                builder.with_root_certificates(load_roots(path, var)?).with_no_client_auth()
            }
        };
        // What libpq 17 sends; PostgreSQL 17 refuses any other, older servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Some(Tls { connect: MakeRustlsConnect::new(config), verify }))
    }

    /// The reason to report for a connect that failed in the TLS handshake, or `None` when `error` is
    /// not a TLS failure.
    pub(crate) fn failure(&self, error: &postgres::Error, sslmode: SslMode) -> Option<String> {
        // tokio-postgres has no public error kind; its TLS kind is told by its message.
        if !error.to_string().starts_with("error performing TLS handshake") {
            return None;
        }
        let cause = std::error::Error::source(error);
        let rustls = cause
            .and_then(|cause| cause.downcast_ref::<io::Error>())
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        let ca_file = match &self.verify {
            Verify::Ca(path) | Verify::Full(path) => Some(path),
            Verify::Nothing => None,
        };
        Some(match (rustls, ca_file) {
            (Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)), Some(path)) => {
                let why = if sslmode == SslMode::Require {
                    "sslmode=require with sslrootcert checks the chain, as libpq does; use the CA that signed \
                     the server's certificate, or drop sslrootcert to encrypt without checking"
                } else {
                    "use the CA that signed the server's certificate"
                };
                format!(
                    "TLS: the server's certificate is not signed by the CA certificate in sslrootcert ({}) \
                     (sslmode={sslmode}); {why}",
                    path.display()
                )
            }
            (Some(rustls::Error::InvalidCertificate(e)), _) if is_name_mismatch(e) => format!(
                "TLS: {e} (sslmode=verify-full: the certificate must name the host connected to; connect \
                 by a name it lists, or use sslmode=verify-ca)"
            ),
            (Some(rustls::Error::InvalidCertificate(e)), _) => format!("TLS: the server's certificate: {e}"),
            (Some(e), _) => format!("TLS: {e}"),
            (None, _) => match cause {
                Some(cause) if cause.to_string() == "server does not support TLS" => format!(
                    "TLS: the server does not accept TLS connections, and sslmode={sslmode} requires TLS; \
                     turn ssl on in the server's configuration, or use sslmode=prefer to allow plain \
                     connections"
                ),
                Some(cause) => format!("TLS: {cause}"),
                None => "TLS: the handshake failed".to_owned(),
            },
        })
    }
}

/// Whether every endpoint is a Unix socket, where PostgreSQL offers no TLS.
fn only_sockets(params: &ConnParams) -> bool {
    params.endpoints.iter().all(|endpoint| matches!(endpoint.host, Host::Unix(_)))
}

fn is_name_mismatch(error: &CertificateError) -> bool {
    matches!(error, CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. })
}

/// The CA certificates of a PEM file (`sslrootcert`).
fn load_roots(path: &Path, var: &str) -> Result<RootCertStore, Error> {
    let problem =
        |what: String| Error::Unsupported(format!("{var}'s sslrootcert {}: {what}", path.display()));
    if path == Path::new("system") {
        return Err(problem(
            "sslrootcert=system (the operating system's CAs) is not supported; give the path of a PEM file \
             holding the CA certificate"
                .to_owned(),
        ));
    }
    let pem = std::fs::read(path).map_err(|e| problem(format!("cannot be read: {e}")))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| problem(format!("is not a valid PEM file: {e}")))?;
        roots.add(cert).map_err(|e| problem(format!("holds a certificate that is not a usable CA: {e}")))?;
    }
    if roots.is_empty() {
        return Err(problem("holds no certificate (no -----BEGIN CERTIFICATE----- section)".to_owned()));
    }
    Ok(roots)
}

/// A certificate verifier that never compares the host name: it checks the chain to `roots`
/// (`verify-ca`) or, without roots, nothing (`allow`, `prefer`, `require`). The handshake's signatures
/// are checked either way.
#[derive(Debug)]
struct NameUnchecked {
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NameUnchecked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(&cert, roots, intermediates, now, self.algorithms.all)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(url: &str) -> ConnParams {
        pgconn_config::Settings::from_vars([("DATABASE_URL", url)]).expect("a valid URL").target
    }

    #[track_caller]
    fn check(url: &str, expected: Option<&Verify>) {
        let tls = Tls::new(&params(url), "DATABASE_URL").unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(tls.as_ref().map(|tls| &tls.verify), expected, "{url}");
    }

    #[test]
    fn sslmode_decides_what_is_checked() {
        let dir = std::env::temp_dir().join(format!("pgconn-pool-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the temporary directory is writable");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, TEST_CA).expect("the temporary directory is writable");
        let ca_param = format!("sslrootcert={}", ca.display());
        check("postgresql://u@h/d?sslmode=disable", None);
        check("postgresql://u@h/d?sslmode=allow", Some(&Verify::Nothing));
        check("postgresql://u@h/d", Some(&Verify::Nothing));
        check(&format!("postgresql://u@h/d?sslmode=prefer&{ca_param}"), Some(&Verify::Nothing));
        check("postgresql://u@h/d?sslmode=require", Some(&Verify::Nothing));
        check(&format!("postgresql://u@h/d?sslmode=require&{ca_param}"), Some(&Verify::Ca(ca.clone())));
        check(&format!("postgresql://u@h/d?sslmode=verify-ca&{ca_param}"), Some(&Verify::Ca(ca.clone())));
        check(&format!("postgresql://u@h/d?sslmode=verify-full&{ca_param}"), Some(&Verify::Full(ca.clone())));
        // No TLS over Unix sockets, whatever the mode (libpq: sslmode is ignored there).
        check(&format!("postgresql://u@%2Ftmp/d?sslmode=verify-full&{ca_param}"), None);
        check("postgresql:///d?host=/tmp&user=u&sslmode=require", None);
        std::fs::remove_dir_all(&dir).expect("the temporary directory is writable");
    }

    #[track_caller]
    fn check_error(content: Option<&str>, expected: &str) {
        let dir = std::env::temp_dir().join(format!("pgconn-pool-tls-err-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the temporary directory is writable");
        let path = dir.join("root ca.pem");
        if let Some(content) = content {
            std::fs::write(&path, content).expect("the temporary directory is writable");
        }
        let url = format!("postgresql://u:secret@h/d?sslmode=verify-full&sslrootcert={}", path.display())
            .replace(' ', "%20");
        let error = Tls::new(&params(&url), "DATABASE_URL").err().expect("the CA file is refused");
        let message = error.to_string();
        std::fs::remove_dir_all(&dir).expect("the temporary directory is writable");
        let prefix = format!("DATABASE_URL's sslrootcert {}: ", path.display());
        assert!(message.starts_with(&prefix), "{message}");
        assert!(message.contains(expected), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn an_unusable_ca_file_is_refused_naming_the_variable_and_the_path() {
        check_error(None, "cannot be read: No such file or directory");
        check_error(Some(""), "holds no certificate");
        check_error(Some("not a certificate\n"), "holds no certificate");
        check_error(
            Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            "not a usable CA",
        );
    }

    #[test]
    fn system_is_refused_with_what_to_do() {
        let url = "postgresql://u@h/d?sslmode=verify-ca&sslrootcert=system";
        let error = Tls::new(&params(url), "PGBOUNCER_URL").err().expect("system is not supported");
        assert!(error.to_string().starts_with("PGBOUNCER_URL's sslrootcert system: "), "{error}");
    }

    #[test]
    fn the_connector_is_send_sync_clone_and_static() {
        fn assert_bounds<T: Send + Sync + Clone + 'static>() {}
        assert_bounds::<Tls>();
    }

    /// A self-signed CA certificate (ECDSA P-256, valid until 2126), made once with `openssl req -x509`.
    const TEST_CA: &str = "\
-----BEGIN CERTIFICATE-----
MIIBrTCCAVOgAwIBAgIUPSNsHSBSda8UnoVPy51FxiAfG8AwCgYIKoZIzj0EAwIw
IzEhMB8GA1UEAwwYcGdjb25uLXBvb2wgdW5pdCB0ZXN0IENBMCAXDTI2MTEyNzA3
MzIzN1oYDzIxMjYxMTAzMDczMjM3WjAjMSEwHwYDVQQDDBhwZ2Nvbm4tcG9vbCB1
bml0IHRlc3QgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQnSizSNC+5SJIH
q43D9oEghm4ClbDJ2uMWzoq44gST23h+HHe8honvjRroTXw8dzSBMMAI3OdD0DDU
7cHfJ3kno2MwYTAdBgNVHQ4EFgQUMsXaNNLXkJq3SyIWe4RzLnjKO14wHwYDVR0j
BBgwFoAUMsXaNNLXkJq3SyIWe4RzLnjKO14wDwYDVR0TAQH/BAUwAwEB/zAOBgNV
HQ8BAf8EBAMCAgQwCgYIKoZIzj0EAwIDSAAwRQIhAJvcAlshuezmT09bsdH3qHjm
/7HE8oSCqcRQj3DQlbLWAiAZXAuUPXd8maYbJsVY4HnQvYVXvKyIHywYg7jLWxU+
Bw==
-----END CERTIFICATE-----
";
}
