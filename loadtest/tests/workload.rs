//! The workload is a deterministic function of its seed and the replies it is fed.

use std::sync::Arc;

use loadtest::wire;
use loadtest::workload::{Generator, Op, Shown, Workload, WorkloadConfig};

fn small(seed: u64) -> WorkloadConfig {
    WorkloadConfig {
        seed,
        users: 10_000,
        items: 2_000,
        lag: 16,
        ..WorkloadConfig::default()
    }
}

/// Generates `n` ops of stream 0 as wire bytes, answering each decision with a fixed fake
/// ranking (its first `n` candidates), as a server that replies identically would.
fn stream(cfg: WorkloadConfig, n: usize) -> (Vec<u8>, Vec<Op>) {
    let w = Arc::new(Workload::new(cfg).unwrap());
    let mut g = Generator::new(w.clone(), 0, 2);
    let board = g.board();
    let mut bytes = Vec::new();
    let mut ops = Vec::new();
    for id in 0..n as u64 {
        let op = g.next_op();
        wire::encode(&op, id, &w, &mut bytes);
        bytes.push(b'\n');
        if let Op::Decide(d) = &op {
            let items = d.candidates.iter().take(d.n as usize).copied().collect();
            board.post(
                d.session,
                Shown {
                    decision: 0xabc0_0000 + d.session,
                    items,
                },
            );
        }
        ops.push(op);
    }
    (bytes, ops)
}

#[test]
fn same_seed_gives_the_same_request_stream() {
    let (a, ops) = stream(small(7), 20_000);
    let (b, _) = stream(small(7), 20_000);
    assert_eq!(a, b, "seed 7 gave two different streams");
    let (c, _) = stream(small(8), 20_000);
    assert_ne!(a, c, "seeds 7 and 8 gave the same stream");
    // The stream has every kind of op, with follow-ups naming their decisions.
    let decides = ops.iter().filter(|o| matches!(o, Op::Decide(_))).count();
    let share = decides as f64 / ops.len() as f64;
    assert!((0.17..0.23).contains(&share), "decision share {share}");
    assert!(ops.iter().any(|o| matches!(o, Op::Reward(_))));
    let attributed = ops
        .iter()
        .filter(|o| matches!(o, Op::Event(e) if e.decision.is_some_and(|d| d >= 0xabc0_0000)))
        .count();
    assert!(
        attributed > 100,
        "only {attributed} events named a decision"
    );
}

#[test]
fn clicks_follow_the_hidden_taste() {
    let cfg = small(11);
    let w = Arc::new(Workload::new(cfg.clone()).unwrap());
    let (_, ops) = stream(cfg, 50_000);
    // Clicks on shown items land on the user's favourite category far more often than the
    // share of that category among shown items (which is about half by construction).
    let (mut fav, mut all) = (0, 0);
    for op in &ops {
        if let Op::Event(e) = op {
            if e.kind == nudge::EventKind::Click && e.decision.is_some() {
                all += 1;
                fav += (w.category(e.item.unwrap()) == w.favourite(e.user)) as u32;
            }
        }
    }
    assert!(all > 500, "{all} clicks");
    let share = fav as f64 / all as f64;
    assert!(
        share > 0.7,
        "only {share:.2} of clicks on the favourite category"
    );
}

#[test]
fn streams_own_disjoint_users() {
    let w = Arc::new(Workload::new(small(3)).unwrap());
    for s in 0..3u32 {
        let mut g = Generator::new(w.clone(), s, 3);
        for _ in 0..2_000 {
            let user = match g.next_op() {
                Op::Event(e) => e.user,
                Op::Decide(d) => d.user,
                Op::Reward(r) => r.user,
                Op::Item(_) | Op::Batch(_) => unreachable!("generators emit neither"),
            };
            assert_eq!(user % 3, s);
        }
    }
}
