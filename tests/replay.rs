//! Issue 15, item 4: `nudge replay` evaluates template (multi-slot) decisions off-policy.
//! A log written by the engine's own decision log (softmax over a two-slot template, rewards
//! drawn from a known table) is read back; the slate IPS and SNIPS of fixed target policies
//! cover their on-policy values, computed exactly from the table.

use nudge::eval::baselines::RandomPolicy;
use nudge::eval::log::{read, JsonlLog, DEFAULT_CAPACITY};
use nudge::eval::replay::{run, LearnFrom, ReplayArgs};
use nudge::eval::slate::{self, LoggedSlate};
use nudge::eval::{Observation, Policy, Request};
use nudge::rng::Rng;
use nudge::template::{TemplateRequest, TemplateSpec};
use nudge::{Config, Engine, ManualClock, PolicyKind};

const T0: u64 = 1_732_200_000_000;
const HEADLINES: [&str; 3] = ["h1", "h2", "h3"];
const BUTTONS: [&str; 2] = ["b1", "b2"];

/// The chance that a decision showing (headline, button) is rewarded: headline effects, a
/// button effect, and an interaction (h2 with b2).
fn pays(h: usize, b: usize) -> f64 {
    let base = [0.10, 0.45, 0.25][h] + [0.0, 0.15][b];
    base + if (h, b) == (1, 1) { 0.2 } else { 0.0 }
}

/// A fixed factorised target: each slot's distribution over its variants, whoever asks.
struct Fixed {
    headline: [f64; 3],
    button: [f64; 2],
}

impl Fixed {
    /// Its value under `pays`: `Σ π(h) π(b) p(h, b)`.
    fn value(&self) -> f64 {
        let mut v = 0.0;
        for (h, ph) in self.headline.iter().enumerate() {
            for (b, pb) in self.button.iter().enumerate() {
                v += ph * pb * pays(h, b);
            }
        }
        v
    }
}

impl Policy for Fixed {
    fn name(&self) -> String {
        "fixed".into()
    }
    fn place(&mut self, _req: &Request<'_>) -> Vec<usize> {
        vec![0]
    }
    fn first_slot(&mut self, req: &Request<'_>) -> Vec<f64> {
        match req.candidates.len() {
            3 => self.headline.to_vec(),
            _ => self.button.to_vec(),
        }
    }
    fn observe(&mut self, _obs: &Observation<'_>) {}
}

/// `n` template decisions over 50 users, each rewarded (as a whole) with the chance `pays`
/// gives, written by the engine's decision log to `path`.
fn write_log(path: &std::path::Path, n: u64) {
    let log = JsonlLog::create(path, DEFAULT_CAPACITY).unwrap();
    let clock = ManualClock::new(T0);
    let mut cfg = Config {
        shards: 1,
        seed: 4,
        ..Config::default()
    };
    cfg.exploration.policy = PolicyKind::Softmax;
    cfg.exploration.temperature = 2.0;
    let e = Engine::builder()
        .config(cfg)
        .clock(clock.clone())
        .decision_log(log.clone())
        .build()
        .unwrap();
    let spec = TemplateSpec::new("promo", "<h1>{{headline}}</h1><b>{{button}}</b>")
        .slot("headline", HEADLINES.map(|v| (v, v)))
        .slot("button", BUTTONS.map(|v| (v, v)));
    e.register_template(spec).unwrap();
    let mut rng = Rng::new(11);
    for i in 0..n {
        let at = T0 + i * 1_000;
        clock.set_ms(at);
        let req = TemplateRequest::new(format!("u{}", i % 50), "promo").at(at);
        let d = e.decide_template(req).unwrap();
        let h = HEADLINES.iter().position(|v| *v == d.slots[0].variant);
        let b = BUTTONS.iter().position(|v| *v == d.slots[1].variant);
        let reward = rng.next_f64() < pays(h.unwrap(), b.unwrap());
        e.reward_decision_at(d.id, if reward { 1.0 } else { 0.0 }, Some(at))
            .unwrap();
    }
    e.shutdown();
    log.close();
    assert_eq!(log.stats().dropped, 0);
}

#[test]
fn slate_ips_covers_the_on_policy_value_of_a_known_target() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.jsonl");
    write_log(&path, 3_000);
    let records = read(std::io::BufReader::new(std::fs::File::open(&path).unwrap())).unwrap();
    let slates: Vec<LoggedSlate> = slate::slates_from_records(&records);
    assert_eq!(slates.len(), 3_000);
    assert!(
        nudge::eval::replay::from_records(&records).is_empty(),
        "not read as rankings"
    );
    let s = &slates[0];
    assert_eq!(s.slots[0].candidates.len(), 3);
    assert_eq!(s.slots[1].slot, "promo/button");
    // The logging policy learned: far from uniform by the end, yet exploring.
    let last = &slates[2_999];
    assert!(last.propensity() > 0.0 && last.propensity() < 1.0);

    let targets = [
        Fixed {
            headline: [0.2, 0.6, 0.2],
            button: [0.3, 0.7],
        },
        Fixed {
            headline: [0.7, 0.1, 0.2],
            button: [0.9, 0.1],
        },
    ];
    for (t, mut target) in targets.into_iter().enumerate() {
        let truth = target.value();
        let e = slate::evaluate(&mut target, &slates, LearnFrom::Every, 5);
        assert_eq!(e.rows, 3_000);
        for (name, i) in [("IPS", e.ips), ("SNIPS", e.snips)] {
            assert!(
                i.lo <= truth && truth <= i.hi,
                "target {t}: {name} {i} misses its value {truth}"
            );
            assert!(i.hi - i.lo < 0.2, "target {t}: {name} {i} too wide");
        }
        assert_eq!(e.slots.len(), 2);
    }
    // The uniformly random policy: the mean of the table.
    let truth = (0..3)
        .flat_map(|h| (0..2).map(move |b| pays(h, b)))
        .sum::<f64>()
        / 6.0;
    let e = slate::evaluate(&mut RandomPolicy::new(1), &slates, LearnFrom::Every, 5);
    assert!(
        e.snips.lo <= truth && truth <= e.snips.hi,
        "{} vs {truth}",
        e.snips
    );
    // The two targets are told apart.
    let good = slate::evaluate(&mut targets_good(), &slates, LearnFrom::Every, 5);
    let bad = slate::evaluate(&mut targets_bad(), &slates, LearnFrom::Every, 5);
    assert!(good.snips.disjoint(&bad.snips) && good.snips.mean > bad.snips.mean);

    // `nudge replay --log` prints the template's table, nudge's variants included.
    let args = ReplayArgs {
        log: Some(path.clone()),
        obd: false,
        campaign: nudge::eval::obd::Campaign::All,
        config: None,
        learn: LearnFrom::Every,
        seed: 7,
    };
    let table = run(&args).unwrap();
    assert!(
        table.contains("template `promo`: 3000 logged decisions over 2 slots"),
        "{table}"
    );
    assert!(table.contains("| nudge (full) |"), "{table}");
    assert!(table.contains("`promo/button` SNIPS"), "{table}");
}

fn targets_good() -> Fixed {
    Fixed {
        headline: [0.0, 1.0, 0.0],
        button: [0.0, 1.0],
    }
}

fn targets_bad() -> Fixed {
    Fixed {
        headline: [1.0, 0.0, 0.0],
        button: [1.0, 0.0],
    }
}
