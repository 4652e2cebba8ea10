//! TLS as libpq's `sslmode` means it, over rustls with the `ring` provider: built once per pool.
//!
//! | `sslmode` | TLS | server certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `allow`, `prefer` | if the server accepts it, else plain | not checked |
//! | `require` | always | not checked; with `sslrootcert` (or `~/.postgresql/root.crt`), as `verify-ca` (libpq does the same) |
//! | `verify-ca` | always | chain to a CA of `sslrootcert` |
//! | `verify-full` | always | chain to a CA of `sslrootcert`, and it names the host (an IP address host: in its IP SANs) |
//!
//! `sslrootcert` is a PEM file of CA certificates, or `system`: the operating system's trusted CAs, read
//! with `rustls-native-certs` (the same files OpenSSL, and so libpq, reads: `/etc/ssl/certs` on Debian,
//! `SSL_CERT_FILE`/`SSL_CERT_DIR` honoured), which `pgconn-config` pairs with `verify-full` as libpq 16
//! does. A file holding the server's own self-signed certificate is accepted for that certificate, as
//! OpenSSL accepts it (the PostgreSQL documentation's recipe); webpki alone refuses a CA certificate
//! presented as the server's own. The validity period is checked either way, and the name for
//! `verify-full`.
//!
//! A client certificate (`sslcert`, `sslkey`, PEM; the key unencrypted and private to its owner, as
//! libpq requires) is sent when the server asks for one.
//!
//! Whatever the mode, the handshake's signatures are checked against the certificate's key, and SCRAM
//! authentication binds itself to that certificate (`SCRAM-SHA-256-PLUS`, `tls-server-end-point`) when
//! the server offers it, so a man in the middle cannot relay the password exchange even where the
//! certificate itself is not checked. Over a Unix socket there is no TLS (PostgreSQL offers none there;
//! libpq ignores `sslmode` for sockets too).

use std::io;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::sync::Arc;

use pgconn_config::{ConnParams, Host, SslMode, SslRootCert};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore,
    SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::Error;

/// What the pool checks of a server's certificate, from `sslmode` and `sslrootcert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verify {
    /// `allow`, `prefer`, and `require` without `sslrootcert`: encrypted, the certificate not checked.
    Nothing,
    /// `verify-ca`, and `require` with `sslrootcert`: the chain must lead to a CA of `sslrootcert`.
    Ca(SslRootCert),
    /// `verify-full`: the chain, and the certificate must name the host.
    Full(SslRootCert),
}

/// The TLS side of a connector: the rustls configuration (cloned per connect: an `Arc`) and what it
/// checks, for messages.
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) connect: MakeRustlsConnect,
    pub(crate) verify: Verify,
    /// Whether a client certificate is offered.
    pub(crate) client_cert: bool,
}

impl Tls {
    /// The TLS configuration for `params`; `None` when no connection to them can use TLS (`disable`, or
    /// only Unix sockets). `var` names the variable the parameters came from, for messages.
    ///
    /// # Errors
    /// When a certificate or key file is needed and cannot be read, holds nothing usable, or (a key)
    /// others may read it.
    pub(crate) fn new(params: &ConnParams, var: &str) -> Result<Option<Tls>, Error> {
        if params.sslmode == SslMode::Disable || only_sockets(params) {
            return Ok(None);
        }
        let verify = match (params.sslmode, &params.sslrootcert) {
            (SslMode::VerifyFull, Some(roots)) => Verify::Full(roots.clone()),
            (SslMode::VerifyCa | SslMode::Require, Some(roots)) => Verify::Ca(roots.clone()),
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
        let checker = match &verify {
            Verify::Nothing => Checker { roots: None, pinned: Vec::new(), check_name: false, algorithms },
            Verify::Ca(roots) | Verify::Full(roots) => {
                let (store, pinned) = load_roots(roots, var)?;
                Checker {
                    roots: Some(Arc::new(store)),
                    pinned,
                    check_name: matches!(verify, Verify::Full(_)),
                    algorithms,
                }
            }
        };
        let builder = builder.dangerous().with_custom_certificate_verifier(Arc::new(checker));
        let client_cert = params.sslcert.is_some();
        let mut config = match (&params.sslcert, &params.sslkey) {
            (Some(cert), Some(key_path)) => {
                let (chain, key) = load_client_cert(cert, key_path, var)?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    Error::Unsupported(format!(
                        "{var}'s sslcert {} and sslkey {} do not go together: {e}",
                        cert.display(),
                        key_path.display()
                    ))
                })?
            }
            (Some(cert), None) => {
                return Err(Error::Unsupported(format!(
                    "{var} has sslcert {} but no sslkey, the certificate's private key",
                    cert.display()
                )));
            }
            _ => builder.with_no_client_auth(),
        };
        // What libpq 17 sends; PostgreSQL 17 refuses any other, older servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Some(Tls { connect: MakeRustlsConnect::new(config), verify, client_cert }))
    }

    /// The reason to report for a connect that failed in the TLS handshake, or `None` when `error` is
    /// not a TLS failure. Always a sentence, never a `Debug` string.
    pub(crate) fn failure(&self, error: &postgres::Error, sslmode: SslMode) -> Option<String> {
        let cause = std::error::Error::source(error);
        let rustls = cause
            .and_then(|cause| cause.downcast_ref::<io::Error>())
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        // tokio-postgres has no public error kind; its TLS kind is told by its message. Under TLS 1.3 a
        // server's verdict on the client certificate arrives after the handshake, at the first read.
        if rustls.is_none() && !error.to_string().starts_with("error performing TLS handshake") {
            return None;
        }
        let roots = match &self.verify {
            Verify::Ca(roots) | Verify::Full(roots) => Some(roots),
            Verify::Nothing => None,
        };
        Some(match rustls {
            Some(rustls::Error::InvalidCertificate(e)) => certificate_failure(e, roots, sslmode),
            Some(rustls::Error::AlertReceived(alert)) => {
                let about_us = matches!(
                    alert,
                    AlertDescription::CertificateRequired
                        | AlertDescription::BadCertificate
                        | AlertDescription::UnknownCA
                        | AlertDescription::CertificateUnknown
                        | AlertDescription::CertificateExpired
                        | AlertDescription::CertificateRevoked
                        | AlertDescription::UnsupportedCertificate
                        | AlertDescription::AccessDenied
                );
                if about_us && self.client_cert {
                    format!(
                        "TLS: the server refused pgconn's client certificate (sslcert) with the alert \
                         \"{}\"; it must be signed by a CA in the server's ssl_ca_file and be valid now",
                        alert_name(*alert)
                    )
                } else if about_us {
                    format!(
                        "TLS: the server ended the handshake with the alert \"{}\": it asks for a client \
                         certificate; give sslcert=PATH and sslkey=PATH (or ~/.postgresql/postgresql.crt \
                         and .key)",
                        alert_name(*alert)
                    )
                } else {
                    format!("TLS: the server ended the handshake with the alert \"{}\"", alert_name(*alert))
                }
            }
            Some(e) => format!("TLS: {e}"),
            None => match cause {
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

/// A sentence for a certificate the checks refused.
fn certificate_failure(error: &CertificateError, roots: Option<&SslRootCert>, sslmode: SslMode) -> String {
    let from = match roots {
        Some(SslRootCert::File(path)) => format!("the CA certificate in sslrootcert ({})", path.display()),
        Some(SslRootCert::System) => "any CA the operating system trusts (sslrootcert=system)".to_owned(),
        None => "a trusted CA".to_owned(),
    };
    match error {
        CertificateError::UnknownIssuer => {
            let why = if sslmode == SslMode::Require {
                "sslmode=require with sslrootcert checks the chain, as libpq does; use the CA that signed the \
                 server's certificate, or drop sslrootcert to encrypt without checking"
            } else {
                "use the CA that signed the server's certificate"
            };
            format!("TLS: the server's certificate is not signed by {from} (sslmode={sslmode}); {why}")
        }
        e if is_name_mismatch(e) => format!(
            "TLS: the server's certificate does not name the host connected to (sslmode=verify-full: connect \
             by a name it lists, or use sslmode=verify-ca){}",
            match e {
                CertificateError::NotValidForNameContext { expected, presented } => {
                    let expected = match expected {
                        ServerName::DnsName(name) => name.as_ref().to_owned(),
                        ServerName::IpAddress(address) => std::net::IpAddr::from(*address).to_string(),
                        _ => "the host".to_owned(),
                    };
                    let names: Vec<&str> = presented.iter().map(|name| plain_name(name)).collect();
                    format!("; connected to \"{expected}\", it names {}", names.join(", "))
                }
                _ => String::new(),
            }
        ),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "TLS: the server's certificate has expired; renew it on the server (ssl_cert_file) and reload"
                .to_owned()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "TLS: the server's certificate is not valid yet; check the clocks of this host and of the \
             server"
                .to_owned()
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "TLS: the server's certificate is not for TLS servers (its extended key usage lacks serverAuth)"
                .to_owned()
        }
        CertificateError::BadSignature => {
            "TLS: the server's certificate has a bad signature (a tampered or corrupt certificate)".to_owned()
        }
        CertificateError::Other(OtherError(other)) if format!("{other:?}").contains("CaUsedAsEndEntity") => {
            format!(
                "TLS: the server presents a CA certificate as its own certificate, and it is not the one in \
                 {from}; give the server's own certificate as sslrootcert, or give the server a certificate \
                 signed by the CA"
            )
        }
        e => format!("TLS: the server's certificate was refused ({e})"),
    }
}

/// A name as webpki reports it (`DnsName("localhost")`, `IpAddress(127.0.0.1)`), without the wrapping.
fn plain_name(reported: &str) -> &str {
    if let (Some(first), Some(last)) = (reported.find('"'), reported.rfind('"'))
        && first < last
    {
        return &reported[first + 1..last];
    }
    match (reported.find('('), reported.rfind(')')) {
        (Some(open), Some(close)) if open < close => &reported[open + 1..close],
        _ => reported,
    }
}

/// A TLS alert's name as the TLS specification spells it.
fn alert_name(alert: AlertDescription) -> String {
    let debug = format!("{alert:?}");
    let mut out = String::new();
    for (i, c) in debug.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Whether every endpoint is a Unix socket, where PostgreSQL offers no TLS.
fn only_sockets(params: &ConnParams) -> bool {
    params.endpoints.iter().all(|endpoint| matches!(endpoint.host, Host::Unix(_)))
}

fn is_name_mismatch(error: &CertificateError) -> bool {
    matches!(error, CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. })
}

/// The CA certificates of `sslrootcert`, and its certificates that are not CAs, or are self-signed, for
/// a server presenting one of them as its own.
fn load_roots(
    roots: &SslRootCert,
    var: &str,
) -> Result<(RootCertStore, Vec<CertificateDer<'static>>), Error> {
    let mut store = RootCertStore::empty();
    let path = match roots {
        SslRootCert::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
                return Err(Error::Unsupported(format!(
                    "{var}'s sslrootcert=system: the operating system's trusted CAs cannot be read{}; install \
                     them (Debian: apt-get install ca-certificates) or give sslrootcert=PATH",
                    if errors.is_empty() { String::new() } else { format!(" ({})", errors.join("; ")) }
                )));
            }
            return Ok((store, Vec::new()));
        }
        SslRootCert::File(path) => path,
    };
    let problem =
        |what: String| Error::Unsupported(format!("{var}'s sslrootcert {}: {what}", path.display()));
    let pem = std::fs::read(path).map_err(|e| problem(format!("cannot be read: {e}")))?;
    let mut pinned = Vec::new();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| problem(format!("is not a valid PEM file: {e}")))?;
        store.add(cert.clone()).map_err(|e| match e {
            rustls::Error::InvalidCertificate(CertificateError::BadEncoding) => {
                problem("holds a certificate that cannot be parsed (its DER encoding is broken)".to_owned())
            }
            e => problem(format!("holds a certificate that cannot be used as a CA ({e})")),
        })?;
        pinned.push(cert);
    }
    if store.is_empty() {
        return Err(problem("holds no certificate (no -----BEGIN CERTIFICATE----- section)".to_owned()));
    }
    Ok((store, pinned))
}

/// `sslcert`'s chain and `sslkey`'s key, with libpq's rule for the key's mode.
fn load_client_cert(
    cert: &Path,
    key: &Path,
    var: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    let pem = std::fs::read(cert)
        .map_err(|e| Error::Unsupported(format!("{var}'s sslcert {} cannot be read: {e}", cert.display())))?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&pem).collect::<Result<_, _>>().map_err(|e| {
            Error::Unsupported(format!("{var}'s sslcert {} is not a valid PEM file: {e}", cert.display()))
        })?;
    if chain.is_empty() {
        return Err(Error::Unsupported(format!(
            "{var}'s sslcert {} holds no certificate (no -----BEGIN CERTIFICATE----- section)",
            cert.display()
        )));
    }
    let key_problem = |what: String| Error::Unsupported(format!("{var}'s sslkey {}: {what}", key.display()));
    let metadata = std::fs::metadata(key).map_err(|e| key_problem(format!("cannot be read: {e}")))?;
    // libpq: 0600 or less when owned by the user, 0640 or less when owned by root.
    let mode = metadata.permissions().mode();
    let allowed = if metadata.uid() == 0 { 0o640 } else { 0o600 };
    if mode & 0o777 & !allowed != 0 {
        return Err(key_problem(format!(
            "has mode {:04o}; a private key must be u=rw (0600) or less if owned by the current user, or \
             u=rw,g=r (0640) or less if owned by root (chmod 0600 {})",
            mode & 0o777,
            key.display()
        )));
    }
    let pem = std::fs::read(key).map_err(|e| key_problem(format!("cannot be read: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        key_problem(format!("holds no usable private key (PEM, unencrypted: PKCS#8, PKCS#1 or SEC1): {e}"))
    })?;
    Ok((chain, key))
}

/// The certificate checks: the chain to `roots` (or, for a certificate `sslrootcert` holds itself, its
/// validity period), and the name for `verify-full`; nothing without roots (`allow`, `prefer`,
/// `require`). The handshake's signatures are checked either way.
#[derive(Debug)]
struct Checker {
    roots: Option<Arc<RootCertStore>>,
    /// The certificates of `sslrootcert`, any of which a server may present as its own.
    pinned: Vec<CertificateDer<'static>>,
    check_name: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Checker {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else { return Ok(ServerCertVerified::assertion()) };
        let cert = ParsedCertificate::try_from(end_entity)?;
        if self.pinned.iter().any(|pinned| pinned.as_ref() == end_entity.as_ref()) {
            // The server's own certificate, trusted as such (OpenSSL's behaviour): only its dates.
            check_dates(end_entity, now)?;
        } else {
            verify_server_cert_signed_by_trust_anchor(&cert, roots, intermediates, now, self.algorithms.all)?;
        }
        if self.check_name {
            check_name(end_entity, &cert, server_name)?;
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

/// `verify-full`'s name check: the subjectAltName's DNS names and IP addresses; for a certificate with
/// none of them, its common name, as libpq (and the PostgreSQL documentation's self-signed recipe) has it.
fn check_name(
    der: &CertificateDer<'_>,
    cert: &ParsedCertificate<'_>,
    server_name: &ServerName<'_>,
) -> Result<(), rustls::Error> {
    let Err(error) = verify_server_name(cert, server_name) else { return Ok(()) };
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(der.as_ref()) else { return Err(error) };
    let has_names = parsed.subject_alternative_name().ok().flatten().is_some_and(|san| {
        san.value.general_names.iter().any(|name| {
            matches!(
                name,
                x509_parser::extensions::GeneralName::DNSName(_)
                    | x509_parser::extensions::GeneralName::IPAddress(_)
            )
        })
    });
    if has_names {
        return Err(error);
    }
    let wanted = match server_name {
        ServerName::DnsName(name) => name.as_ref().to_owned(),
        ServerName::IpAddress(address) => std::net::IpAddr::from(*address).to_string(),
        _ => return Err(error),
    };
    let matched = parsed
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .any(|cn| common_name_matches(cn, &wanted));
    if matched { Ok(()) } else { Err(error) }
}

/// libpq's comparison of a common name with the host: case-insensitive, a leading `*.` matching one label.
fn common_name_matches(pattern: &str, host: &str) -> bool {
    if pattern.eq_ignore_ascii_case(host) {
        return true;
    }
    match (pattern.strip_prefix("*."), host.split_once('.')) {
        (Some(suffix), Some((label, rest))) => !label.is_empty() && rest.eq_ignore_ascii_case(suffix),
        _ => false,
    }
}

/// Whether `now` is within the certificate's validity period.
fn check_dates(der: &CertificateDer<'_>, now: UnixTime) -> Result<(), rustls::Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let validity = cert.validity();
    if now < validity.not_before.timestamp() {
        return Err(rustls::Error::InvalidCertificate(CertificateError::NotValidYet));
    }
    if now > validity.not_after.timestamp() {
        return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
    }
    Ok(())
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
        let file = SslRootCert::File(ca.clone());
        check(&format!("postgresql://u@h/d?sslmode=require&{ca_param}"), Some(&Verify::Ca(file.clone())));
        check(&format!("postgresql://u@h/d?sslmode=verify-ca&{ca_param}"), Some(&Verify::Ca(file.clone())));
        check(&format!("postgresql://u@h/d?sslmode=verify-full&{ca_param}"), Some(&Verify::Full(file)));
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
            "cannot be parsed",
        );
    }

    #[test]
    fn common_names_match_as_libpq_matches_them() {
        assert!(common_name_matches("db.example.com", "DB.example.com"));
        assert!(common_name_matches("*.example.com", "db.example.com"));
        assert!(!common_name_matches("*.example.com", "a.db.example.com"));
        assert!(!common_name_matches("*.example.com", "example.com"));
        assert!(!common_name_matches("db.example.com", "db.example.org"));
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
