//! `eg-echo NAME ADDR`: the harness's HTTP echo backend as its own process, for test hosts in
//! network namespaces. Prints `listening on ADDR` once it accepts connections.

use std::net::SocketAddr;

use eg_e2e::backend::EchoBackend;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let name = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: eg-echo NAME ADDR"))?;
    let addr: SocketAddr = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: eg-echo NAME ADDR"))?
        .parse()?;
    let backend = EchoBackend::http_on(&name, addr).await?;
    println!("listening on {}", backend.addr());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
