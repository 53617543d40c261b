//! The HTTP origin client against a real nginx, on both drivers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::nginx::Nginx;
use common::{DRIVERS, pseudo_random};
use glance_stream::origin::{FetchError, Origin, OriginConfig};

/// Runs `f` on `driver` with a blocking pool attached (the origin client
/// resolves names on it, as glance-stream's workers do).
fn run<F: std::future::Future>(driver: &str, f: F) -> F::Output {
    let pool = || Box::new(monoio::blocking::DefaultThreadPool::new(2));
    match driver {
        "io_uring" => monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .attach_thread_pool(pool())
            .enable_timer()
            .build()
            .unwrap()
            .block_on(f),
        _ => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .attach_thread_pool(pool())
            .enable_timer()
            .build()
            .unwrap()
            .block_on(f),
    }
}

#[test]
fn ranged_fetches_return_exact_bytes_over_one_kept_alive_connection() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path());
    let bytes = pseudo_random(3 << 20, 91);
    std::fs::write(nginx.root.join("img"), &bytes).unwrap();
    for driver in DRIVERS {
        let origin = Origin::new(
            OriginConfig::from_url(&format!("http://127.0.0.1:{}/", nginx.port)).unwrap(),
        );
        run(driver, async {
            let mut buf = Vec::new();
            for (a, b) in [
                (0u64, 99u64),
                (1 << 20, (2 << 20) - 1),
                ((3 << 20) - 1, (3 << 20) - 1),
                (0, (3 << 20) - 1),
            ] {
                let (r, got) = origin.fetch("img", a, b, 3 << 20, buf).await;
                r.unwrap();
                assert_eq!(got, &bytes[a as usize..=b as usize], "{driver} {a}-{b}");
                buf = got;
            }
            assert_eq!(
                origin.idle_connections(),
                1,
                "{driver}: the connection was not reused"
            );
        });
    }
}

#[test]
fn origin_errors_are_typed_and_say_whether_to_retry() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path());
    std::fs::write(nginx.root.join("small"), b"0123456789").unwrap();
    for driver in DRIVERS {
        let origin = Origin::new(
            OriginConfig::from_url(&format!("http://127.0.0.1:{}/", nginx.port)).unwrap(),
        );
        run(driver, async {
            let (r, _) = origin.fetch("missing", 0, 9, 10, Vec::new()).await;
            assert!(matches!(r, Err(FetchError::Status(404))), "{driver}: {r:?}");
            assert!(!r.unwrap_err().retryable());
            // The origin's object is shorter than the link says: nginx
            // answers 416 past its end, and a short range elsewhere.
            let (r, _) = origin.fetch("small", 20, 29, 100, Vec::new()).await;
            assert!(matches!(r, Err(FetchError::Status(416))), "{driver}: {r:?}");
            let (r, _) = origin.fetch("small", 5, 50, 100, Vec::new()).await;
            assert!(matches!(r, Err(FetchError::Protocol(_))), "{driver}: {r:?}");
            // Same length asked, other total size: another object.
            let (r, _) = origin.fetch("small", 0, 4, 11, Vec::new()).await;
            assert!(matches!(r, Err(FetchError::Protocol(_))), "{driver}: {r:?}");
            let (r, _) = origin.fetch("../etc/passwd", 0, 1, 2, Vec::new()).await;
            assert!(matches!(r, Err(FetchError::Protocol(_))));
        });
    }
}

#[test]
fn a_dead_or_silent_origin_times_out_cleanly() {
    // Nothing listens on this port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // This one accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    for driver in DRIVERS {
        run(driver, async {
            let origin = Origin::new(
                OriginConfig::from_url(&format!("http://127.0.0.1:{closed}/")).unwrap(),
            );
            let (r, _) = origin.fetch("x", 0, 9, 10, Vec::new()).await;
            assert!(matches!(r, Err(FetchError::Connect(_))), "{driver}: {r:?}");
            assert!(r.unwrap_err().retryable());
            let mut config =
                OriginConfig::from_url(&format!("http://127.0.0.1:{silent_port}/")).unwrap();
            config.timeouts.first_byte = Duration::from_millis(300);
            let origin = Origin::new(config);
            let (r, _) = origin.fetch("x", 0, 9, 10, Vec::new()).await;
            assert!(matches!(r, Err(FetchError::Timeout(_))), "{driver}: {r:?}");
        });
    }
    drop(silent);
}

#[test]
fn a_pooled_connection_the_origin_closed_is_replaced_transparently() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = pseudo_random(1000, 92);
    let nginx = Nginx::start(dir.path());
    std::fs::write(nginx.root.join("img"), &bytes).unwrap();
    for driver in DRIVERS {
        let origin = Origin::new(
            OriginConfig::from_url(&format!("http://127.0.0.1:{}/", nginx.port)).unwrap(),
        );
        run(driver, async {
            let (r, _) = origin.fetch("img", 0, 999, 1000, Vec::new()).await;
            r.unwrap();
            assert_eq!(origin.idle_connections(), 1);
            // nginx closes idle keep-alive connections after a second.
            monoio::time::sleep(Duration::from_millis(1500)).await;
            let (r, got) = origin.fetch("img", 10, 19, 1000, Vec::new()).await;
            r.unwrap();
            assert_eq!(got, &bytes[10..20], "{driver}");
        });
    }
}
