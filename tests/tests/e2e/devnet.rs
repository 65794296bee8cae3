//! `devnet`: the real router and three real order servers started as
//! processes with generated keys, healthy over TLS (the router's client
//! certificate pinned by every order server), an order server restarted at
//! the address the descriptor names, and the whole network restarted on its
//! directory with the same keys and ports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use grompi_ops::tls::TlsIdentity;
use grompi_proto::descriptor::NetworkDescriptor;
use grompi_simulator::live::devnet::{Devnet, DevnetOptions};
use grompi_tests::{ORDER_SERVICE, connect, wait_healthy};
use std::time::Duration;

const ROUTER_SERVICE: &str = "grompi.v1.Router";

async fn all_healthy(net: &Devnet) {
    let router_data = net.router.data_dir.clone();
    let router_cert = std::fs::read_to_string(router_data.join("router.crt")).unwrap();
    let ch = connect(net.router.addrs.grpc, &router_cert, None)
        .await
        .unwrap();
    wait_healthy(&ch, ROUTER_SERVICE, Duration::from_secs(30))
        .await
        .unwrap();
    // Only the router's identity may call an order server.
    let router_identity = TlsIdentity::read_from(&router_data, "router").unwrap();
    for (node, entry) in net.order_servers.iter().zip(&net.descriptor.order_servers) {
        let ch = connect(node.addrs.grpc, &entry.tls_ca_pem, Some(&router_identity))
            .await
            .unwrap();
        wait_healthy(&ch, ORDER_SERVICE, Duration::from_secs(30))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_starts_restarts_and_keeps_its_keys() {
    grompi_ops::tls::install_crypto_provider();
    let bins = grompi_tests::binary("router")
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let options = DevnetOptions {
        dir: dir.path().join("net"),
        order_servers: 3,
        quorum: Some(2),
        binaries: bins,
        router_extra: String::new(),
        order_extra: String::new(),
        evil: Default::default(),
    };
    let mut net = Devnet::start(&options).unwrap();
    let text = std::fs::read_to_string(&net.descriptor_path).unwrap();
    let descriptor = NetworkDescriptor::parse(&text).unwrap();
    assert_eq!(descriptor.order_servers.len(), 3);
    assert_eq!(descriptor.quorum, 2);
    assert_eq!(
        descriptor.router.address,
        format!("https://localhost:{}", net.router.addrs.grpc.port())
    );
    for (node, entry) in net.order_servers.iter().zip(&descriptor.order_servers) {
        assert!(
            entry
                .address
                .ends_with(&format!(":{}", node.addrs.grpc.port()))
        );
    }
    all_healthy(&net).await;
    assert!(net.summary().contains("quorum 2 of 3"), "{}", net.summary());

    // An order server comes back where the descriptor says it is.
    let before = net.order_servers[1].addrs.grpc;
    net.restart_order_server(1).unwrap();
    assert_eq!(net.order_servers[1].addrs.grpc, before);
    all_healthy(&net).await;

    // Even when something else holds its port for a while (as a connection
    // given that port as its source port would): it waits for the port.
    net.stop_order_server(2).unwrap();
    let port = net.order_servers[2].addrs.grpc;
    let squatter = std::net::TcpListener::bind(port).unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        drop(squatter);
    });
    net.restart_order_server(2).unwrap();
    release.join().unwrap();
    assert_eq!(net.order_servers[2].addrs.grpc, port);
    let log = std::fs::read_to_string(net.order_servers[2].process.log()).unwrap();
    assert!(
        log.contains("Address already in use"),
        "the first attempts found the port taken"
    );
    all_healthy(&net).await;

    // The whole devnet restarts on its directory: same keys, same ports.
    let router_port = net.router.addrs.grpc.port();
    net.stop();
    drop(net);
    let again = Devnet::start(&options).unwrap();
    all_healthy(&again).await;
    assert_eq!(again.router.addrs.grpc.port(), router_port);
    let keys = |d: &NetworkDescriptor| {
        d.order_servers
            .iter()
            .map(|s| s.public_key)
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&again.descriptor), keys(&descriptor));
}

#[test]
fn devnet_refuses_a_quorum_that_is_not_a_majority() {
    let dir = tempfile::tempdir().unwrap();
    let err = Devnet::start(&DevnetOptions {
        dir: dir.path().to_path_buf(),
        order_servers: 4,
        quorum: Some(2),
        binaries: dir.path().to_path_buf(),
        router_extra: String::new(),
        order_extra: String::new(),
        evil: Default::default(),
    })
    .unwrap_err();
    assert!(err.to_string().contains("more than half"), "{err}");
}

/// The benchmark runs end to end on a tiny grid: every member accepts every
/// message in both arms, and the report has a cell and a ratio per
/// configuration. (Figures come from the bench command, not from tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_measures_every_cell_against_the_relay() {
    use grompi_simulator::live::bench::{BenchOptions, run};
    let bins = grompi_tests::binary("router")
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let options = BenchOptions {
        dir: dir.path().to_path_buf(),
        binaries: bins,
        servers: vec![1, 3],
        groups: vec![3],
        latency_messages: 6,
        throughput_messages: 12,
        body_bytes: 64,
        block_bytes: 32,
        majority: false,
    };
    let mut steps = Vec::new();
    let report = run(&options, |s| steps.push(s.to_owned())).await.unwrap();
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert_eq!(report.cells.len(), 3);
    assert_eq!(report.ratios.len(), 2);
    for c in &report.cells {
        assert!(c.throughput_per_s > 0.0, "{c:?}");
        assert!(
            c.latency_p50_ms > 0.0 && c.latency_p99_ms >= c.latency_p50_ms,
            "{c:?}"
        );
    }
    // Every attested cell has its probes (target 1's decomposition), and
    // the decomposition table a row for it.
    for c in report.cells.iter().filter(|c| c.mode == "attested") {
        let p = &c.probes;
        assert!(p.order_commits > 0 && p.router_fanouts > 0, "{p:?}");
        assert!(
            p.order_commit_p50_ms.is_some()
                && p.order_request_p50_ms.is_some()
                && p.round_trip_p50_ms.is_some()
                && p.router_commit_p50_ms.is_some(),
            "{p:?}"
        );
    }
    let md = report.to_markdown();
    assert!(md.contains("| 3 | 3 |"), "{md}");
    let table = report.decomposition();
    for n in [1, 3] {
        assert!(table.contains(&format!("\n| {n} | 3 | ")), "{table}");
    }
    // Where the system tells CPU times, every cell has them, in a table.
    if cfg!(target_os = "linux") {
        for c in &report.cells {
            let cpu = c
                .cpu_per_message
                .unwrap_or_else(|| panic!("no CPU times: {c:?}"));
            assert!(cpu.total_us().is_finite() && cpu.total_us() >= 0.0, "{c:?}");
            assert!(
                md.contains(&format!("| {} | {} | {} |", c.mode, c.servers, c.group)),
                "{md}"
            );
        }
    }
    // The report names where the data was, and whether that was durable.
    assert_eq!(
        report.storage,
        grompi_simulator::live::bench::Storage::of(dir.path())
    );
    assert_ne!(report.storage.filesystem, "unknown");
    if report.storage.durable() {
        assert!(md.contains("durable (fsync on every commit)"), "{md}");
    } else {
        assert!(md.contains("NOT durable"), "{md}");
    }
}
