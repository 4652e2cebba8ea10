//! Certificates for TLS tests, made with rcgen (pure Rust: no `openssl` command, no system library).
//!
//! [`ClusterOptions::tls`](crate::ClusterOptions::tls) gives a cluster `ssl = on` with a CA made for it
//! and a server certificate signed by that CA whose only name is `localhost`: `verify-full` to
//! `localhost` passes and to `127.0.0.1` fails, while `verify-ca` passes either way.
//! [`Cluster::ca_file`](crate::Cluster::ca_file) is the CA's certificate. A test that needs a CA the
//! server does not know makes one with [`TestCa::new`].

use std::fmt::{self, Write as _};
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use anyhow::{Context as _, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::host::ServerUser;

/// The CA certificate of a TLS cluster, in the cluster directory (and, as `ssl_ca_file`, in the data
/// directory: the server asks clients for a certificate signed by it).
pub const CA_FILE: &str = "ca.crt";
/// The role a TLS cluster's `pg_hba.conf` admits only with a client certificate signed by its CA whose
/// common name is the role (`clientcert=verify-full`), and a SCRAM password. The test creates the role.
pub const CERT_USER: &str = "pgconn_cert";
/// That role's client certificate and key (mode 0600), in the cluster directory.
pub const CLIENT_CERT_FILE: &str = "client.crt";
/// See [`CLIENT_CERT_FILE`].
pub const CLIENT_KEY_FILE: &str = "client.key";
/// The `pg_hba.conf` lines a TLS cluster puts before the testkit's own.
pub(crate) const HBA_LINES: &str =
    "hostssl all pgconn_cert 127.0.0.1/32 scram-sha-256 clientcert=verify-full\n";
/// The names (subject alternative names) of a TLS cluster's server certificate.
pub const SERVER_NAMES: &[&str] = &["localhost"];

/// A certificate authority made for a test: ECDSA P-256, valid from 1975 to 4096 (rcgen's defaults).
/// Its key stays in memory.
pub struct TestCa {
    name: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl fmt::Debug for TestCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCa").field("name", &self.name).finish_non_exhaustive()
    }
}

impl TestCa {
    /// A new CA whose certificate's common name is `name`.
    pub fn new(name: &str) -> Result<Self> {
        let mut params = CertificateParams::new(Vec::new()).context("cannot make CA parameters")?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().context("cannot generate the CA's key")?;
        let issuer = CertifiedIssuer::self_signed(params, key).context("cannot sign the CA certificate")?;
        Ok(Self { name: name.to_owned(), issuer })
    }

    /// The CA's certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA's certificate, PEM, to `path` (mode 0644, replacing the file).
    pub fn write_cert(&self, path: &Path) -> Result<()> {
        fs::write(path, self.cert_pem()).with_context(|| format!("cannot write {}", path.display()))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o644))
            .with_context(|| format!("cannot set the mode of {}", path.display()))
    }

    /// A server certificate signed by this CA, for `names` (host names, or IP addresses, which go in the
    /// IP SANs), and its private key: `(certificate PEM, key PEM)`. The common name is the first name.
    pub fn server_cert(&self, names: &[&str]) -> Result<(String, String)> {
        let names: Vec<String> = names.iter().map(|&name| name.to_owned()).collect();
        let mut params = CertificateParams::new(names.clone())
            .with_context(|| format!("invalid server names {names:?}"))?;
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, first.as_str());
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().context("cannot generate the server's key")?;
        let cert = params.signed_by(&key, &self.issuer).context("cannot sign the server certificate")?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A client certificate signed by this CA whose common name is `user` (what `clientcert=verify-full`
    /// compares with the role), and its key: `(certificate PEM, key PEM)`.
    pub fn client_cert(&self, user: &str) -> Result<(String, String)> {
        let mut params = CertificateParams::new(Vec::new()).context("cannot make client parameters")?;
        params.distinguished_name.push(DnType::CommonName, user);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().context("cannot generate the client's key")?;
        let cert = params.signed_by(&key, &self.issuer).context("cannot sign the client certificate")?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// A self-signed server certificate as the PostgreSQL documentation makes one (`openssl req -new -x509
/// -subj "/CN=name"`): a CA certificate (basicConstraints CA:TRUE), the name in its common name only, no
/// subjectAltName. `(certificate PEM, key PEM)`.
pub fn self_signed_server_cert(common_name: &str) -> Result<(String, String)> {
    let mut params = CertificateParams::new(Vec::new()).context("cannot make certificate parameters")?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, common_name);
    let key = KeyPair::generate().context("cannot generate the key")?;
    let cert = params.self_signed(&key).context("cannot self-sign the certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes `content` to `path` with `mode`, replacing the file, owned by `user`.
pub(crate) fn write_private(path: &Path, content: &str, mode: u32, user: ServerUser) -> Result<()> {
    let _ = fs::remove_file(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(content.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    user.chown(path)
}

/// Sets up TLS for a cluster whose `initdb` just ran: a new [`TestCa`], `server.crt` and `server.key`
/// (0600) in `data_dir` owned by `user` (PostgreSQL's default file names, and it refuses a key others
/// can read), the CA's certificate in `dir/`[`CA_FILE`], and `ssl = on` in `postgresql.conf`. Being in
/// the data directory, all of it survives restarts.
pub(crate) fn install(dir: &Path, data_dir: &Path, user: ServerUser) -> Result<()> {
    let ca = TestCa::new("pgconn-testkit CA")?;
    let (cert, key) = ca.server_cert(SERVER_NAMES)?;
    for (name, content, mode) in [("server.crt", &cert, 0o644), ("server.key", &key, 0o600)] {
        let path = data_dir.join(name);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        file.write_all(content.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of {}", path.display()))?;
        user.chown(&path)?;
    }
    let ca_file = dir.join(CA_FILE);
    ca.write_cert(&ca_file)?;
    user.chown(&ca_file)?;
    let server_ca = data_dir.join(CA_FILE);
    ca.write_cert(&server_ca)?;
    user.chown(&server_ca)?;
    // The client's files belong to whoever runs the tests (they read them), not to the server's user.
    let (client_cert, client_key) = ca.client_cert(CERT_USER)?;
    write_private(&dir.join(CLIENT_CERT_FILE), &client_cert, 0o644, ServerUser::Current)?;
    write_private(&dir.join(CLIENT_KEY_FILE), &client_key, 0o600, ServerUser::Current)?;
    let conf_path = data_dir.join("postgresql.conf");
    let mut conf =
        fs::read_to_string(&conf_path).with_context(|| format!("cannot read {}", conf_path.display()))?;
    let _ = writeln!(
        conf,
        "\n# TLS, added by pgconn-testkit: server.crt for {SERVER_NAMES:?}, signed by {CA_FILE}"
    );
    conf.push_str("ssl = on\n");
    let _ = writeln!(conf, "ssl_ca_file = '{CA_FILE}'");
    // Overwriting keeps the file's owner and mode (the server user's, 0600).
    fs::write(&conf_path, conf).with_context(|| format!("cannot write {}", conf_path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_signs_server_certificates() {
        let ca = TestCa::new("unit test CA").expect("rcgen makes a CA");
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let (cert, key) = ca.server_cert(&["localhost", "127.0.0.2"]).expect("rcgen signs");
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }
}
