//! `concord-grpc`: KurrentDB's client gRPC protocol over any [`EventStore`], so that the
//! official KurrentDB (EventStoreDB) client libraries run against Concord unchanged.
//!
//! Why a crate of its own: the protocol is a second front door to the same store, with its
//! own wire types (Concord's own `.proto` files under `proto/`, compiled by `build.rs`
//! without a system `protoc`) and its own error shapes, which the clients key on. It maps
//! onto core types, and persistent subscriptions onto `concord-groups` (the server's one
//! `Groups`, passed in [`GrpcConfig`]); `concord-server` mounts [`routes`] beside the HTTP
//! API.
//!
//! - Streams: `Append`, `BatchAppend`, `Read` (a stream or `$all`, both directions,
//!   catch-up subscriptions with filters and checkpoints), `Delete` and `Tombstone` (the
//!   store's soft delete and tombstone). A stream's metadata stream `$$name` (in
//!   `metastream`) is its retention settings.
//! - PersistentSubscriptions (in `persistent`): Create, Update, Delete, Read, GetInfo, List,
//!   ReplayParked, RestartSubsystem, each a consumer group of `concord-groups`.
//! - The v2 StreamsService's `AppendSession` (in `session`): KurrentDB 25.1's multi-stream
//!   append, one `append_multi`.
//! - ServerFeatures, Gossip (one leader node).
//!
//! The mapping (revision = version − 1, commit = prepare = position, custom metadata,
//! errors) is written in `docs/design/kurrentdb-protocol.md`.
//!
//! **Architecture invariant:** the mapping from store errors to gRPC statuses and the
//! protocol's error messages lives only in `error.rs`.

mod auth;
mod batch;
mod convert;
mod error;
mod features;
mod filter;
mod metastream;
mod persistent;
mod read;
mod session;
mod streams;

#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]
/// The protocol's messages and service traits, generated from `proto/kurrentdb`.
pub mod proto {
    /// Packages `event_store.client.*`.
    pub mod event_store {
        /// Package `event_store.client`: shared types.
        pub mod client {
            include!(concat!(env!("OUT_DIR"), "/event_store.client.rs"));
            /// The Streams service.
            pub mod streams {
                include!(concat!(env!("OUT_DIR"), "/event_store.client.streams.rs"));
            }
            /// The ServerFeatures service.
            pub mod server_features {
                include!(concat!(
                    env!("OUT_DIR"),
                    "/event_store.client.server_features.rs"
                ));
            }
            /// The Gossip service.
            pub mod gossip {
                include!(concat!(env!("OUT_DIR"), "/event_store.client.gossip.rs"));
            }
            /// The PersistentSubscriptions service.
            pub mod persistent_subscriptions {
                include!(concat!(
                    env!("OUT_DIR"),
                    "/event_store.client.persistent_subscriptions.rs"
                ));
            }
        }
    }
    /// Packages `kurrentdb.protocol.v2.*`.
    pub mod kurrentdb {
        /// Package `kurrentdb.protocol`.
        pub mod protocol {
            /// Package `kurrentdb.protocol.v2`.
            pub mod v2 {
                /// Package `kurrentdb.protocol.v2.streams`: the v2 StreamsService.
                pub mod streams {
                    include!(concat!(
                        env!("OUT_DIR"),
                        "/kurrentdb.protocol.v2.streams.rs"
                    ));
                    /// Package `kurrentdb.protocol.v2.streams.errors`: the details of a
                    /// failed v2 append.
                    pub mod errors {
                        include!(concat!(
                            env!("OUT_DIR"),
                            "/kurrentdb.protocol.v2.streams.errors.rs"
                        ));
                    }
                }
            }
        }
    }
    /// Package `google.rpc`: the status BatchAppend answers errors with.
    pub mod google {
        /// `google.rpc.Status`.
        pub mod rpc {
            include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
        }
    }
}

use std::net::SocketAddr;
use std::sync::Arc;

use concord_core::{EventStore, Limits};

pub use auth::{Action, Gate, OpenGate, Refusal, token_from_authorization};
pub use error::GrpcError;

/// The largest gRPC message the services decode: above any append the limits allow, so
/// that an oversized event gets the protocol's size error rather than a transport one.
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// What the services need besides the store.
#[derive(Clone, Debug)]
pub struct GrpcConfig {
    /// The append and read limits (as for the HTTP API).
    pub limits: Limits,
    /// Who may do what: [`OpenGate`] for an open server.
    pub gate: Arc<dyn Gate>,
    /// The address Gossip advertises as the leader's.
    pub advertised: SocketAddr,
    /// The consumer groups over the same store, which persistent subscriptions are (shared
    /// with the HTTP API, so that a change on one side wakes readers on the other).
    pub groups: Arc<concord_groups::Groups>,
    /// Turns `true` when the server shuts down: subscriptions (catch-up and persistent)
    /// then end with UNAVAILABLE, so their connections can close and the server stop.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl GrpcConfig {
    /// Resolves when the server is shutting down (never, if the sender is gone without
    /// saying so).
    pub(crate) fn shutting_down(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut shutdown = self.shutdown.clone();
        async move {
            if shutdown.wait_for(|down| *down).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The gRPC services, ready to be served (by `concord-server`, beside the HTTP API, or on
/// their own).
pub fn routes(store: Arc<dyn EventStore>, config: GrpcConfig) -> tonic::service::Routes {
    use proto::event_store::client::{
        gossip::gossip_server::GossipServer,
        persistent_subscriptions::persistent_subscriptions_server::PersistentSubscriptionsServer,
        server_features::server_features_server::ServerFeaturesServer,
        streams::streams_server::StreamsServer,
    };
    use proto::kurrentdb::protocol::v2::streams::streams_service_server::StreamsServiceServer;
    let groups = Arc::clone(&config.groups);
    let config = Arc::new(config);
    let sessions = StreamsServiceServer::new(session::SessionService::new(
        Arc::clone(&store),
        Arc::clone(&config),
    ))
    .max_decoding_message_size(MESSAGE_BYTES_MAX)
    .max_encoding_message_size(MESSAGE_BYTES_MAX);
    let streams = StreamsServer::new(streams::StreamsService::new(store, Arc::clone(&config)))
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX);
    tonic::service::Routes::new(streams)
        .add_service(sessions)
        .add_service(ServerFeaturesServer::new(features::Features))
        .add_service(GossipServer::new(features::GossipService::new(
            config.advertised,
        )))
        .add_service(
            PersistentSubscriptionsServer::new(persistent::Persistent::new(
                Arc::clone(&config),
                groups,
            ))
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX),
        )
}
