//! `eg-echo NAME ADDR [--tls CERT_FILE KEY_FILE | --stream]`: the harness's echo backend as its
//! own process, for test hosts in network namespaces. HTTP (and h2c, gRPC) by default, HTTPS with
//! the given certificate, or a raw TCP+UDP stream echo. Prints `listening on ADDR` once it
//! accepts connections.

use std::net::SocketAddr;

use eg_e2e::backend::{EchoBackend, StreamEcho};
use eg_e2e::pki::CertPair;

const USAGE: &str = "usage: eg-echo NAME ADDR [--tls CERT_FILE KEY_FILE | --stream]";

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (name, addr, mode) = match args.as_slice() {
        [name, addr, mode @ ..] => (name, addr.parse::<SocketAddr>()?, mode),
        _ => anyhow::bail!(USAGE),
    };
    // Both kinds of server live until Ctrl-C; dropping them stops them.
    let _running: (Option<EchoBackend>, Option<StreamEcho>) = match mode {
        [] => (Some(EchoBackend::http_on(name, addr).await?), None),
        [flag, cert, key] if flag == "--tls" => {
            let pair = CertPair {
                cert_pem: std::fs::read_to_string(cert)?,
                key_pem: std::fs::read_to_string(key)?,
            };
            (Some(EchoBackend::https_on(name, addr, &pair).await?), None)
        }
        [flag] if flag == "--stream" => (None, Some(StreamEcho::start(name, addr).await?)),
        _ => anyhow::bail!(USAGE),
    };
    println!("listening on {addr}");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
