//! Certificates made at test time, so no key material is ever committed: a
//! [`TestPki`] holds a trusted CA, a second CA nobody trusts and a CA for
//! client certificates, and issues from them the leaves a TLS test needs
//! (good, expired, for the wrong name, from the untrusted CA, client
//! certificates for mutual TLS), each an [`Issued`] of PEM strings that
//! [`Issued::write`] puts into a folder for a server or a manifest to read.
//!
//! Keys are ECDSA P-256, signed with rcgen's ring backend. Making a
//! certificate is test setup: it fails the test (with a message) rather than
//! return an error.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, date_time_ymd,
};

/// The names a server leaf is for unless told otherwise: what the TLS fakes'
/// URLs name.
pub const LOCALHOST_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// The name [`TestPki::wrong_name_server`] is for: nothing a test connects to.
pub const WRONG_NAME: &str = "wrong-name.invalid";

/// A certificate and its private key, as PEM, with the certificate of the CA
/// that signed it.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate (`-----BEGIN CERTIFICATE-----`).
    pub cert_pem: String,
    /// Its private key, PKCS#8 (`-----BEGIN PRIVATE KEY-----`).
    pub key_pem: String,
    /// The certificate of the CA that signed it.
    pub ca_pem: String,
}

/// Where [`Issued::write`] put a certificate, its key and its CA.
#[derive(Clone, Debug)]
pub struct PemFiles {
    /// `NAME.crt`: the certificate.
    pub cert: PathBuf,
    /// `NAME.key`: its private key.
    pub key: PathBuf,
    /// `NAME-ca.crt`: the certificate of the CA that signed it.
    pub ca: PathBuf,
}

impl Issued {
    /// Writes `NAME.crt`, `NAME.key` and `NAME-ca.crt` into `dir` and gives
    /// their paths.
    pub fn write(&self, dir: &Path, name: &str) -> PemFiles {
        let files = PemFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
            ca: dir.join(format!("{name}-ca.crt")),
        };
        write(&files.cert, &self.cert_pem);
        write(&files.key, &self.key_pem);
        write(&files.ca, &self.ca_pem);
        files
    }
}

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl TestCa {
    /// A self-signed CA whose subject is `common_name`.
    pub fn new(common_name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("generate a CA key");
        let cert = params.self_signed(&key).expect("self-sign a CA");
        Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA's certificate, as PEM: what a client trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Writes the CA's certificate into `dir` as `file_name` and gives its
    /// path (for `SSL_CERT_FILE` or `--ca-file`).
    pub fn write(&self, dir: &Path, file_name: &str) -> PathBuf {
        let path = dir.join(file_name);
        write(&path, &self.cert_pem);
        path
    }

    /// A server certificate for `names`, each a DNS name or an IP address.
    pub fn server(&self, names: &[&str]) -> Issued {
        self.leaf(names, ExtendedKeyUsagePurpose::ServerAuth, false)
    }

    /// A server certificate for `names` that expired long ago (valid only
    /// during the year 2000).
    pub fn expired_server(&self, names: &[&str]) -> Issued {
        self.leaf(names, ExtendedKeyUsagePurpose::ServerAuth, true)
    }

    /// A client certificate whose subject is `common_name`, for mutual TLS.
    pub fn client(&self, common_name: &str) -> Issued {
        self.leaf(&[common_name], ExtendedKeyUsagePurpose::ClientAuth, false)
    }

    fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose, expired: bool) -> Issued {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(names.first().copied().unwrap_or("flyte-connect test"));
        params.subject_alt_names = names.iter().map(|n| san(n)).collect();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        if expired {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().expect("generate a leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign a leaf certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: self.cert_pem.clone(),
        }
    }
}

/// The certificates of one test: the CA clients trust, a CA they do not, and
/// a CA that signs client certificates, with the leaves each TLS case needs.
pub struct TestPki {
    ca: TestCa,
    untrusted_ca: TestCa,
    client_ca: TestCa,
}

impl TestPki {
    /// Three fresh CAs.
    pub fn new() -> Self {
        Self {
            ca: TestCa::new("flyte-connect test CA"),
            untrusted_ca: TestCa::new("flyte-connect untrusted CA"),
            client_ca: TestCa::new("flyte-connect client CA"),
        }
    }

    /// The CA clients are to trust; it signs the good server leaves.
    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    /// A CA no client trusts.
    pub fn untrusted_ca(&self) -> &TestCa {
        &self.untrusted_ca
    }

    /// A CA apart from [`ca`](Self::ca) that signs client certificates only.
    pub fn client_ca(&self) -> &TestCa {
        &self.client_ca
    }

    /// The trusted CA's certificate, as PEM.
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// A server leaf for `localhost` and 127.0.0.1, signed by the trusted CA.
    pub fn server(&self) -> Issued {
        self.ca.server(&LOCALHOST_NAMES)
    }

    /// A server leaf for `names` (DNS names or IPs), signed by the trusted CA.
    pub fn server_for(&self, names: &[&str]) -> Issued {
        self.ca.server(names)
    }

    /// An expired server leaf for `localhost` and 127.0.0.1, signed by the
    /// trusted CA.
    pub fn expired_server(&self) -> Issued {
        self.ca.expired_server(&LOCALHOST_NAMES)
    }

    /// A server leaf for [`WRONG_NAME`] only, signed by the trusted CA.
    pub fn wrong_name_server(&self) -> Issued {
        self.ca.server(&[WRONG_NAME])
    }

    /// A server leaf for `localhost` and 127.0.0.1, signed by the untrusted
    /// CA.
    pub fn untrusted_server(&self) -> Issued {
        self.untrusted_ca.server(&LOCALHOST_NAMES)
    }

    /// A client certificate for `common_name`, signed by the trusted CA.
    pub fn client(&self, common_name: &str) -> Issued {
        self.ca.client(common_name)
    }

    /// A client certificate for `common_name`, signed by the client CA.
    pub fn client_from_client_ca(&self, common_name: &str) -> Issued {
        self.client_ca.client(common_name)
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// A subject alternative name: an IP address when `name` parses as one.
fn san(name: &str) -> SanType {
    match name.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(
            name.try_into()
                .unwrap_or_else(|e| panic!("{name:?} is not a DNS name: {e}")),
        ),
    }
}

fn write(path: &Path, pem: &str) {
    std::fs::write(path, pem).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_are_pem_signed_by_their_ca() {
        let pki = TestPki::new();
        let server = pki.server();
        assert!(server.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(server.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(server.ca_pem, pki.ca_pem());
        assert_eq!(pki.untrusted_server().ca_pem, pki.untrusted_ca().cert_pem());
        assert_eq!(
            pki.client_from_client_ca("a").ca_pem,
            pki.client_ca().cert_pem()
        );
        assert_ne!(pki.ca_pem(), pki.untrusted_ca().cert_pem());
    }

    #[test]
    fn a_bundle_is_written_where_asked() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let pki = TestPki::new();
        let issued = pki.client("tenant-a");
        let files = issued.write(dir.path(), "client");
        assert_eq!(files.cert, dir.path().join("client.crt"));
        let read = |p: &Path| std::fs::read_to_string(p).expect("read a written file");
        assert_eq!(read(&files.cert), issued.cert_pem);
        assert_eq!(read(&files.key), issued.key_pem);
        assert_eq!(read(&files.ca), pki.ca_pem());
        assert_eq!(read(&pki.ca().write(dir.path(), "ca.crt")), pki.ca_pem());
    }
}
