//! Benchmarks that need more than the `concord bench` command: criterion micro-benchmarks of
//! the hot paths (`benches/`) and the peer comparison with UmaDB (`src/bin/peer.rs`, behind the `umadb` feature).
//!
//! It is not a default workspace member, so a plain `cargo build` or `cargo test` at the root
//! does not compile criterion or UmaDB's client; `--workspace` still does (CI).
