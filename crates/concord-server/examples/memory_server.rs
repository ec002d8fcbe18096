//! `concord-server` on a `MemoryStore`, for trying the API with curl before the `concord`
//! binary wires `serve`: `cargo run -p concord-server --example memory_server [ADDR]`.

use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:2113".to_owned());
    let config = concord_server::ServerConfig {
        addr: addr.parse()?,
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    // Listening for Ctrl-C and SIGTERM before the address is printed.
    let shutdown = concord_server::shutdown_signal();
    println!("serving on http://{}", listener.local_addr()?);
    let store = Arc::new(concord_core::MemoryStore::new());
    concord_server::serve(listener, store, config, shutdown).await?;
    println!("stopped");
    Ok(())
}
