//! The open loop's schedule (`loadtest::pace::Schedule`): pure arithmetic on offsets, checked
//! without a clock. The pacer thread's timing is not tested here (tests check behaviour,
//! never wall time); the short open-loop runs in `embedded` and `server` exercise it.

use std::time::Duration;

use loadtest::pace::Schedule;

/// Rates and connection counts the checks below run over, including a rate that does not
/// divide a second evenly.
const SHAPES: [(f64, u32); 5] = [(1.0, 1), (4_000.0, 4), (20_000.0, 4), (3.0, 7), (333.3, 3)];

#[test]
fn requests_are_evenly_spaced_and_dealt_round_robin() {
    let s = Schedule::new(4_000.0, 4, Duration::from_secs(1));
    assert_eq!(s.total(), 4_000);
    assert_eq!(s.offset_ns(0), 0);
    assert_eq!(s.offset_ns(1), 250_000);
    assert_eq!(s.offset_ns(4_000), 1_000_000_000);
    // Connection c's request i is request i·C + c: the old formula `(i·C + c) / R`.
    assert_eq!(s.connection_offset_ns(0, 1), 1_000_000);
    assert_eq!(s.connection_offset_ns(3, 0), 750_000);
    assert_eq!(s.connection_offset_ns(2, 5), s.offset_ns(22));
    for c in 0..4 {
        assert_eq!(s.of_connection(c, s.total()), 1_000, "connection {c}");
    }
}

#[test]
fn due_counts_agree_exactly_with_the_offsets() {
    for (rate, conns) in SHAPES {
        let s = Schedule::new(rate, conns, Duration::from_secs(3));
        for j in 0..s.total().min(5_000) {
            let at = s.offset_ns(j);
            // At its own offset a request is due; one nanosecond before, it is not.
            assert_eq!(s.due(at), j + 1, "rate {rate}, request {j}");
            if at > 0 {
                assert_eq!(s.due(at - 1), j, "rate {rate}, request {j}");
            }
        }
    }
}

#[test]
fn the_run_ends_before_its_length_and_connections_share_it() {
    for (rate, conns) in SHAPES {
        let length = Duration::from_millis(2_500);
        let s = Schedule::new(rate, conns, length);
        let end_ns = length.as_nanos() as u64;
        assert!(s.total() > 0, "rate {rate}");
        assert!(s.offset_ns(s.total() - 1) < end_ns, "rate {rate}");
        assert!(s.offset_ns(s.total()) >= end_ns, "rate {rate}");
        // Nothing past the end is ever due.
        assert_eq!(s.due(1_000_000_000_000_000), s.total(), "rate {rate}");
        for n in [0, 1, 2, 5, 17, s.total()] {
            let shares: u64 = (0..conns).map(|c| s.of_connection(c, n)).sum();
            assert_eq!(shares, n, "rate {rate}, {conns} connections, first {n}");
        }
        // Connection c's due count covers exactly its requests among the first n.
        for c in 0..conns {
            let k = s.of_connection(c, s.total());
            assert!(s.connection_offset_ns(c, k.saturating_sub(1)) < end_ns || k == 0);
            assert!(
                s.connection_offset_ns(c, k) >= end_ns,
                "rate {rate}, conn {c}"
            );
        }
    }
    assert_eq!(Schedule::new(1_000.0, 2, Duration::ZERO).total(), 0);
}

#[test]
fn the_pacer_wakes_at_the_next_due_request_but_at_most_once_a_tick() {
    let tick = 200_000;
    // 4,000/s: a request every 250 µs, more than a tick: wake exactly when it is due.
    let slow = Schedule::new(4_000.0, 4, Duration::from_secs(1));
    assert_eq!(slow.next_wake_ns(0, tick), Some(250_000));
    assert_eq!(slow.next_wake_ns(260_000, tick), Some(500_000));
    // 20,000/s: a request every 50 µs; wake a tick later, and by then four more are due.
    let fast = Schedule::new(20_000.0, 4, Duration::from_secs(1));
    assert_eq!(fast.next_wake_ns(0, tick), Some(200_000));
    assert_eq!(fast.due(200_000) - fast.due(0), 4);
    // A pacer that overslept wakes again a tick later, and everything missed is due at once.
    assert_eq!(fast.next_wake_ns(10_000_000, tick), Some(10_200_000));
    assert_eq!(fast.due(10_000_000), 201);
    // Once the last request is due, there is nothing to wake for.
    assert_eq!(slow.next_wake_ns(999_999_999, tick), None);
    assert_eq!(
        slow.next_wake_ns(slow.offset_ns(3_998), tick),
        Some(slow.offset_ns(3_999))
    );
    // Every wake is later than now, whatever the tick.
    for (rate, conns) in SHAPES {
        let s = Schedule::new(rate, conns, Duration::from_secs(2));
        let mut now = 0;
        let mut wakes = 0;
        while let Some(w) = s.next_wake_ns(now, 0) {
            assert!(w > now, "rate {rate}: wake {w} at {now}");
            assert_eq!(
                s.due(w),
                s.due(now) + 1,
                "rate {rate}: one request per wake"
            );
            now = w;
            wakes += 1;
        }
        assert_eq!(wakes + 1, s.total(), "rate {rate}");
    }
}
