//! A bare tonic echo server: no auth, no layers, the baseline that benchmarks compare with.

use std::net::SocketAddr;

use cqrs_proto::testing::v1::echo_service_client::EchoServiceClient;
use cqrs_proto::testing::v1::echo_service_server::{EchoService, EchoServiceServer};
pub use cqrs_proto::testing::v1::{EchoRequest, EchoResponse};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

struct Echo;

#[tonic::async_trait]
impl EchoService for Echo {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        Ok(Response::new(EchoResponse {
            message: request.into_inner().message,
        }))
    }
}

pub struct EchoServer {
    pub addr: SocketAddr,
    pub channel: Channel,
}

impl EchoServer {
    pub fn client(&self) -> EchoServiceClient<Channel> {
        EchoServiceClient::new(self.channel.clone())
    }
}

/// Starts the echo server on 127.0.0.1:0 for the rest of the process.
pub async fn spawn() -> EchoServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(EchoServiceServer::new(Echo))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    EchoServer { addr, channel }
}
