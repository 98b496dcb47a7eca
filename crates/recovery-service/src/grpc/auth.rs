//! Caller roles under mutual TLS: a client certificate's SANs (URIs as written, DNS names as
//! `dns:NAME`) map to roles through `RECOVERY_CALLERS`; each RPC names the roles that may call
//! it. Without a client CA (plaintext or server-only TLS) every caller is trusted.

use std::collections::{BTreeSet, HashMap};

use tonic::Request;
use x509_parser::{extensions::GeneralName, prelude::FromDer as _};

use crate::domain::Error;

/// The role a caller's client certificate maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// The auth service: runs the recovery flow and manages codes.
    Auth,
    /// Operators: status, revoke, audit.
    Operator,
}

/// One `IDENTITY=ROLE` entry of `RECOVERY_CALLERS` (parsed by the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// A client certificate SAN: a URI as written, or `dns:NAME`.
    pub identity: String,
    pub role: Role,
}

/// Who may call what.
#[derive(Debug, Clone, Default)]
pub struct Callers {
    roles: HashMap<String, BTreeSet<Role>>,
}

impl Callers {
    pub fn new(callers: &[Caller]) -> Self {
        let mut roles: HashMap<String, BTreeSet<Role>> = HashMap::new();
        for caller in callers {
            roles
                .entry(caller.identity.clone())
                .or_default()
                .insert(caller.role);
        }
        Self { roles }
    }

    /// Checks that the request's client certificate maps to one of `allowed`; answers the
    /// identity that did.
    pub fn authorize<T>(&self, request: &Request<T>, allowed: &[Role]) -> Result<String, Error> {
        let Some(certs) = request.peer_certs() else {
            return Err(Error::CallerNotAllowed(
                "no client certificate: this server requires mutual TLS".into(),
            ));
        };
        let Some(leaf) = certs.first() else {
            return Err(Error::CallerNotAllowed("no client certificate".into()));
        };
        let identities = identities(leaf.as_ref());
        let granted = identities.iter().find(|id| {
            self.roles
                .get(*id)
                .is_some_and(|roles| roles.iter().any(|role| allowed.contains(role)))
        });
        if let Some(identity) = granted {
            Ok(identity.clone())
        } else {
            let allowed: Vec<&str> = allowed.iter().map(|r| role_name(*r)).collect();
            tracing::info!(?identities, "caller not allowed");
            Err(Error::CallerNotAllowed(format!(
                "this RPC is for callers with the role {}; the client certificate maps to none of them",
                allowed.join(" or ")
            )))
        }
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Auth => "auth",
        Role::Operator => "operator",
    }
}

/// The identities of a DER certificate: URI SANs as written, DNS SANs as `dns:NAME`.
pub fn identities(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::certificate::X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            GeneralName::DNSName(dns) => Some(format!("dns:{dns}")),
            _ => None,
        })
        .collect()
}
