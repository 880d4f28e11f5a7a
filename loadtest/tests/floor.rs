//! The loopback floor: the echo server answers every byte, the measure counts each round
//! trip, and `loadtest serve` announces the echo server beside nudge's ports.

use loadtest::floor;
use loadtest::serve::Endpoints;

#[tokio::test]
async fn the_echo_floor_times_every_round_trip() {
    let addr = floor::spawn_echo().unwrap();
    let payload = b"{\"op\":\"decide\",\"user\":\"u\",\"candidates\":[\"a\",\"b\"]}\n".repeat(20);
    let hist = floor::measure(addr, &payload, 10, 200).await.unwrap();
    assert_eq!(hist.len(), 200);
    assert!(hist.min() > 0);
    let text = floor::report(&hist, 1_000_000.0, 1_000_000.0);
    assert!(text.contains("loopback floor"), "{text}");
    assert!(text.contains("excess over the floor"), "{text}");
}

#[test]
fn the_serve_line_carries_the_echo_address_when_there_is_one() {
    let with = Endpoints {
        tcp: "127.0.0.1:1".parse().unwrap(),
        http: "127.0.0.1:2".parse().unwrap(),
        echo: Some("127.0.0.1:3".parse().unwrap()),
    };
    assert_eq!(Endpoints::parse(&with.line()), Some(with.clone()));
    let without = Endpoints { echo: None, ..with };
    assert_eq!(Endpoints::parse(&without.line()), Some(without));
}
