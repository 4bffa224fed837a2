//! A DNS server inside the test process (hickory-server) on 127.0.0.1, UDP and TCP on one port:
//! A and AAAA answers from a record set the test changes while it runs, every answer with a 1 s
//! TTL. Tests that resolve endpoint names (tests/discovery.rs) point `dns.nameservers` at it, so
//! they need no DNS server installed on the machine.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::proto::rr::rdata::{A, AAAA, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType, RrKey};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};

/// The TTL of every answer, negative ones included (the SOA minimum).
pub const TTL: u32 = 1;

/// The serial the zone is built with; nothing transfers the zone, so it never changes.
const SERIAL: u32 = 1;

/// Authoritative for the root zone, so it answers every name: the ones set, and NXDOMAIN for
/// the rest. Stops answering when stopped or dropped.
pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Arc<InMemoryZoneHandler>,
    server: Option<Server<Catalog>>,
}

impl DnsServer {
    /// Serve `names` (each name with its addresses). The sockets are bound when this returns,
    /// so a query sent right away waits in the socket instead of being lost.
    pub async fn start(names: &[(&str, &[IpAddr])]) -> Self {
        let origin = Name::root();
        let mut zone =
            InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
        let soa = SOA::new(
            Name::from_ascii("ns.test.").unwrap(),
            Name::from_ascii("hostmaster.test.").unwrap(),
            SERIAL,
            60,
            60,
            60,
            TTL,
        );
        assert!(zone.upsert_mut(
            Record::from_rdata(origin.clone(), TTL, RData::SOA(soa)),
            SERIAL
        ));
        let zone = Arc::new(zone);
        let mut catalog = Catalog::new();
        catalog.upsert(
            LowerName::new(&origin),
            vec![zone.clone() as Arc<dyn ZoneHandler>],
        );

        let (udp, tcp) = bind_pair().await;
        let addr = udp.local_addr().unwrap();
        let mut server = Server::new(catalog);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64);
        let dns = Self {
            addr,
            zone,
            server: Some(server),
        };
        for (name, addresses) in names {
            dns.set(name, addresses).await;
        }
        dns
    }

    /// Replace the addresses of `name` (none: the name no longer exists); the next query sees
    /// them.
    pub async fn set(&self, name: &str, addresses: &[IpAddr]) {
        let mut name = Name::from_ascii(name).unwrap();
        name.set_fqdn(true);
        {
            let mut records = self.zone.records_mut().await;
            for kind in [RecordType::A, RecordType::AAAA] {
                records.remove(&RrKey::new(LowerName::new(&name), kind));
            }
        }
        for address in addresses {
            let data = match address {
                IpAddr::V4(v4) => RData::A(A(*v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
            };
            assert!(
                self.zone
                    .upsert(Record::from_rdata(name.clone(), TTL, data), SERIAL)
                    .await
            );
        }
    }

    /// Stop answering: both sockets are closed when this returns.
    pub async fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            // An open TCP connection from the resolver must not hold the shutdown up; dropping
            // the server aborts whatever is left.
            let _ =
                tokio::time::timeout(Duration::from_secs(1), server.shutdown_gracefully()).await;
        }
    }
}

/// A UDP socket and a TCP listener on the same free port of 127.0.0.1.
async fn bind_pair() -> (tokio::net::UdpSocket, tokio::net::TcpListener) {
    // The port the UDP socket got may be taken for TCP by another test: try another one.
    for _ in 0..50 {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        if let Ok(tcp) = tokio::net::TcpListener::bind(addr).await {
            return (udp, tcp);
        }
    }
    panic!("no port of 127.0.0.1 was free for both UDP and TCP");
}
