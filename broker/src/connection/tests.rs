//! Budgets for what an idle connection costs: the size of its task's future. The future is
//! allocated once per connection for its whole life, so every byte here is a byte per idle
//! connection (see the module docs of `connection` and bench/README.md).

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use crate::{Broker, BrokerConfig, BrokerState, Listeners};

/// What the opening future of a TCP connection may take, in a debug build (the tests'
/// build; a release build's future is smaller): it lives while CONNECT is read (and, for
/// QUIC only, beside the boxed `connected` future for the connection's life). The
/// established connection then runs in a task of its own whose future is `connected`
/// alone, with its state in one box (`Live`: session state machine 176 B, connection
/// 512 B, socket halves and buffers 96 B, admission slot 48 B), and a parked plain-TCP connection has no task
/// at all (see `parker`) and keeps its compact form instead of the box (`dormant`: 360 B
/// with the unsplit socket, out of tokio's reactor, and the admission slot, printed by
/// the test below). 472 B when
/// set (992 B when one future served the whole life).
const SERVE_FUTURE_BUDGET: usize = 512;

async fn broker() -> crate::BrokerHandle {
    let config = BrokerConfig {
        listeners: Listeners {
            tcp: Vec::new(),
            ..Listeners::default()
        },
        sys_interval: 0,
        ..BrokerConfig::default()
    };
    Broker::new(config)
        .start()
        .await
        .expect("start without listeners")
}

fn serve_future_size<S>(broker: &Arc<BrokerState>, stream: S) -> usize
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
    let fut = super::serve(broker.clone(), stream, peer, "tcp", None, None);
    std::mem::size_of_val(&fut)
}

#[tokio::test]
async fn idle_connection_future_stays_within_budget() {
    let h = broker().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client = TcpStream::connect(addr).await.expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    let tcp = serve_future_size(h.state(), server);
    let (a, _b) = tokio::io::duplex(64);
    let duplex = serve_future_size(h.state(), a);
    println!("serve future: TcpStream {tcp} B, DuplexStream {duplex} B");
    println!(
        "parked (compact form): Dormant {} B, DormantSession {} B, Slot {} B, TcpStream {} B",
        std::mem::size_of::<super::dormant::Dormant>(),
        std::mem::size_of::<switchboard_proto::session::DormantSession>(),
        std::mem::size_of::<crate::listener::Slot>(),
        std::mem::size_of::<TcpStream>(),
    );
    println!(
        "parts: Live {} B, ServerSession {} B, Conn {} B, Io<TcpStream> {} B, Identity {} B, SessionState {} B, AckQueue {} B, Sleep {} B, Notified {} B, Cancelled {} B",
        std::mem::size_of::<super::Live<TcpStream>>(),
        std::mem::size_of::<switchboard_proto::session::ServerSession>(),
        std::mem::size_of::<super::conn::Conn>(),
        std::mem::size_of::<super::Io<TcpStream>>(),
        std::mem::size_of::<crate::auth::Identity>(),
        std::mem::size_of::<crate::sessions::SessionState>(),
        std::mem::size_of::<crate::pipeline::ack::AckQueue>(),
        std::mem::size_of::<tokio::time::Sleep>(),
        std::mem::size_of::<tokio::sync::futures::Notified<'static>>(),
        std::mem::size_of::<tokio_util::sync::WaitForCancellationFuture<'static>>(),
    );
    assert!(
        tcp <= SERVE_FUTURE_BUDGET,
        "the TCP connection future is {tcp} B, over its budget of {SERVE_FUTURE_BUDGET} B"
    );
    drop(client);
    h.shutdown().await;
}
