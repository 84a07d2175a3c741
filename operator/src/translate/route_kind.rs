//! The route kinds the translator serves and what differs between them: their Gateway API
//! name (status, ReferenceGrant `from`, listener `allowedRoutes.kinds`), the prefix of their
//! route entry names, and the protocol their backends are spoken to in.

use std::fmt;

use super::ir::UpstreamProtocol;

/// A Gateway API route kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum RouteKind {
    Http,
    Grpc,
    Tls,
    Tcp,
    Udp,
}

impl RouteKind {
    /// Every kind, in the order listeners report them in `supportedKinds`.
    pub const ALL: [RouteKind; 5] = [Self::Http, Self::Grpc, Self::Tls, Self::Tcp, Self::Udp];

    /// The kind's name in the Gateway API group.
    pub fn name(self) -> &'static str {
        match self {
            Self::Http => "HTTPRoute",
            Self::Grpc => "GRPCRoute",
            Self::Tls => "TLSRoute",
            Self::Tcp => "TCPRoute",
            Self::Udp => "UDPRoute",
        }
    }

    /// Lowercase prefix of the names of the entries and listeners a route of this kind makes.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Http => "httproute",
            Self::Grpc => "grpcroute",
            Self::Tls => "tlsroute",
            Self::Tcp => "tcproute",
            Self::Udp => "udproute",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The protocol every backend of this kind is spoken to in, whatever the Service port's
    /// `appProtocol` says; `None` when the Service decides (HTTPRoute).
    pub fn forced_protocol(self) -> Option<UpstreamProtocol> {
        match self {
            Self::Http => None,
            // gRPC is HTTP/2 end to end (cleartext unless a BackendTLSPolicy adds TLS).
            Self::Grpc => Some(UpstreamProtocol::H2c),
            Self::Tls | Self::Tcp => Some(UpstreamProtocol::Tcp),
            Self::Udp => Some(UpstreamProtocol::Udp),
        }
    }

    /// The Service port protocol a backendRef of this kind must select.
    pub fn port_protocol(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            _ => "TCP",
        }
    }
}

impl fmt::Display for RouteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
