//! What clients call around the data: `ServerFeatures` (which optional calls exist: the
//! Rust and .NET clients use BatchAppend only when it is listed), `Gossip` (one node, the
//! leader, at the advertised address). The persistent subscription calls are listed so the
//! Rust client takes the gRPC path for them (it wants all of list, getinfo, replayparked
//! and restartsubsystem, and `all` among create's features for `$all`).

use std::net::SocketAddr;
use std::time::SystemTime;

use tonic::{Request, Response, Status};

use crate::convert;
use crate::proto::event_store::client::Empty;
use crate::proto::event_store::client::gossip::{
    ClusterInfo, EndPoint, MemberInfo, gossip_server::Gossip, member_info::VNodeState,
};
use crate::proto::event_store::client::server_features::{
    SupportedMethod, SupportedMethods, server_features_server::ServerFeatures,
};

/// The version reported to clients: the KurrentDB protocol level Concord speaks. The Rust
/// client refuses a connection whose version does not parse as `major.minor.patch`.
pub(crate) const PROTOCOL_VERSION: &str = "24.10.0";

/// `ServerFeatures`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Features;

fn method(service: &str, name: &str, features: &[&str]) -> SupportedMethod {
    SupportedMethod {
        method_name: name.to_owned(),
        service_name: service.to_owned(),
        features: features.iter().map(|f| (*f).to_owned()).collect(),
    }
}

#[tonic::async_trait]
impl ServerFeatures for Features {
    async fn get_supported_methods(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<SupportedMethods>, Status> {
        let streams = "event_store.client.streams.streams";
        let persistent = "event_store.client.persistent_subscriptions.persistentsubscriptions";
        Ok(Response::new(SupportedMethods {
            methods: vec![
                method(streams, "read", &["position", "events"]),
                method(streams, "append", &[]),
                method(streams, "batchappend", &["deadline_duration"]),
                method(
                    "kurrentdb.protocol.v2.streams.streamsservice",
                    "appendsession",
                    &[],
                ),
                method("event_store.client.gossip.gossip", "read", &[]),
                method(
                    "event_store.client.server_features.serverfeatures",
                    "getsupportedmethods",
                    &[],
                ),
                method(persistent, "create", &["stream", "all"]),
                method(persistent, "update", &["stream", "all"]),
                method(persistent, "delete", &["stream", "all"]),
                method(persistent, "read", &["stream", "all"]),
                method(persistent, "getinfo", &["stream", "all"]),
                method(persistent, "list", &["stream", "all"]),
                method(persistent, "replayparked", &["stream", "all"]),
                method(persistent, "restartsubsystem", &[]),
            ],
            event_store_server_version: PROTOCOL_VERSION.to_owned(),
        }))
    }
}

/// `Gossip`: this node is the leader of a cluster of one.
#[derive(Debug)]
pub(crate) struct GossipService {
    advertised: SocketAddr,
    instance: uuid::Uuid,
}

impl GossipService {
    pub(crate) fn new(advertised: SocketAddr) -> Self {
        GossipService {
            advertised,
            instance: uuid::Uuid::new_v4(),
        }
    }
}

#[tonic::async_trait]
impl Gossip for GossipService {
    async fn read(&self, _request: Request<Empty>) -> Result<Response<ClusterInfo>, Status> {
        let millis = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Ok(Response::new(ClusterInfo {
            members: vec![MemberInfo {
                instance_id: Some(convert::proto_uuid(&self.instance, true)),
                time_stamp: i64::try_from(convert::ticks(millis)).unwrap_or(i64::MAX),
                state: VNodeState::Leader as i32,
                is_alive: true,
                http_end_point: Some(EndPoint {
                    address: self.advertised.ip().to_string(),
                    port: u32::from(self.advertised.port()),
                }),
            }],
        }))
    }
}
