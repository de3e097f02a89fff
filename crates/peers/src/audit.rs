//! Any service's audit chain: its name and keys, and the checkpoints it holds (read by the
//! services that keep each other's checkpoints).

use std::sync::Arc;
use std::time::Duration;

use cqrs_auth::TokenSource;
use cqrs_proto::audit::v1::{self as pb, audit_chain_service_client::AuditChainServiceClient};
use tonic::transport::Channel;

use crate::{Caller, PeerError, Retry};

/// A client of one service's AuditChainService; cheap to clone.
#[derive(Clone)]
pub struct AuditPeer {
    client: AuditChainServiceClient<Channel>,
    caller: Caller,
}

impl AuditPeer {
    pub fn new(channel: Channel, tokens: Arc<dyn TokenSource>, timeout: Duration) -> Self {
        AuditPeer {
            client: AuditChainServiceClient::new(channel),
            caller: Caller::new("audit chain", tokens, timeout),
        }
    }

    pub async fn chain_info(&self) -> Result<pb::GetChainInfoResponse, PeerError> {
        let client = &self.client;
        self.caller
            .call(None, Retry::Safe, pb::GetChainInfoRequest {}, |r| {
                let mut client = client.clone();
                async move { client.get_chain_info(r).await }
            })
            .await
    }

    /// The peer's own checkpoints from `start_sequence`, oldest first.
    pub async fn own_checkpoints(
        &self,
        start_sequence: i64,
    ) -> Result<Vec<pb::Checkpoint>, PeerError> {
        let client = &self.client;
        let request = pb::ListCheckpointsRequest {
            service: String::new(),
            start_sequence,
        };
        Ok(self
            .caller
            .call(None, Retry::Safe, request, |r| {
                let mut client = client.clone();
                async move { client.list_checkpoints(r).await }
            })
            .await?
            .checkpoints)
    }
}
