//! Definitions given over the API survive a restart (`DIR/definitions.log`): rules, triggers,
//! template versions and rollbacks, and segment names come back after a crash-like stop and
//! after a clean one, version numbers continue, the config file's sets are the baseline that a
//! set given over the API overrides (a `nudge serve` whose file changed since says so), and a
//! damaged record in the middle of the log refuses the start naming the file.

use std::path::Path;

use nudge::config::SegmentSource;
use nudge::template::{TemplateRequest, TemplateSpec};
use nudge::{
    Config, DecideRequest, Engine, Event, EventKind, FsyncPolicy, ItemSpec, ManualClock,
    PolicyKind, RuleConfig, TriggerConfig,
};

const T0: u64 = 1_732_200_000_000;

fn config(dir: &Path, edit: impl FnOnce(&mut Config)) -> Config {
    let mut cfg = Config {
        shards: 2,
        seed: 3,
        data_dir: Some(dir.display().to_string()),
        ..Config::default()
    };
    cfg.exploration.policy = PolicyKind::Greedy;
    cfg.segments.k = 2;
    cfg.segments.min_steps = 3;
    cfg.segments.source = SegmentSource::Features;
    cfg.segments.update_interval_ms = 1;
    cfg.durability.fsync = FsyncPolicy::No;
    edit(&mut cfg);
    cfg
}

fn start(cfg: Config, clock: &ManualClock) -> Engine {
    let engine = Engine::builder().config(cfg).clock(clock.clone()).build();
    engine.unwrap()
}

fn rule(name: &str, item: &str) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        action: "force".into(),
        item: Some(item.into()),
        ..RuleConfig::default()
    }
}

fn trigger(name: &str, when: &str) -> TriggerConfig {
    TriggerConfig {
        name: name.into(),
        when: when.into(),
        ..TriggerConfig::default()
    }
}

fn template(body: &str) -> TemplateSpec {
    TemplateSpec::new("t", body).slot("s", [("a", "A")])
}

/// `a-N` users click `a` items and `b-N` users `b` items, a tick after every round, until the
/// segments have centroids (as `tests/segments.rs` teaches them).
fn teach(engine: &Engine, clock: &ManualClock) {
    for side in ["a", "b"] {
        for i in 0..5 {
            let item = ItemSpec::new(format!("{side}{i}")).attr("category", side);
            engine.upsert_item(item).unwrap();
        }
    }
    for r in 0..12 {
        for side in ["a", "b"] {
            for u in 0..12 {
                clock.advance_ms(100);
                let item = format!("{side}{}", (u + r) % 5);
                let click = Event::new(format!("{side}-{u}"), EventKind::Click).item(item);
                engine.ingest(click).unwrap();
            }
        }
        engine.tick().unwrap();
    }
}

fn segment_of(engine: &Engine, user: &str) -> (u32, Option<String>) {
    let export = engine.user(user).unwrap().expect("the user exists");
    let s = export.segment.expect("the user has a segment");
    (s.id, s.name.map(|n| n.to_string()))
}

/// The rules that fired in a decision for `user`, by name.
fn fired(engine: &Engine, user: &str) -> Vec<String> {
    let req = DecideRequest::new(user, ["a0", "a1", "b0", "b1"], 2).explain(true);
    let d = engine.decide(req).unwrap();
    d.rules.iter().map(|e| e.rule.to_string()).collect()
}

fn scroll(engine: &Engine, user: &str, depth: f64) -> Vec<String> {
    let event = Event::new(user, EventKind::Scroll).value(depth);
    let ack = engine.ingest(event).unwrap();
    ack.triggers.iter().map(|t| t.to_string()).collect()
}

#[test]
fn api_definitions_come_back_after_a_crash_and_after_a_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let file = |c: &mut Config| {
        c.rules = vec![rule("file-rule", "a0")];
        c.triggers = vec![trigger("file-trigger", "user.scroll_depth < 0.1")];
    };
    let engine = start(config(dir.path(), file), &clock);
    teach(&engine, &clock);
    // The centroids reach the store; the name given after it is only in the definitions log.
    engine.checkpoint().unwrap();
    assert_eq!(engine.set_rules(&[rule("api-rule", "b1")]).unwrap(), 2);
    let deep = trigger("deep", "user.scroll_depth > 0.7");
    assert_eq!(engine.set_triggers(&[deep]).unwrap(), 2);
    assert_eq!(engine.register_template(template("one {{s}}")).unwrap(), 1);
    assert_eq!(engine.register_template(template("two {{s}}")).unwrap(), 2);
    engine.rollback_template("t", 1).unwrap();
    let (id, _) = segment_of(&engine, "a-0");
    assert_eq!(engine.name_segment(&id.to_string(), "a-fans").unwrap(), id);
    // A crash right after: the log written, no checkpoint since the names.
    engine.shutdown_without_checkpoint();
    drop(engine);

    let engine = start(config(dir.path(), file), &clock);
    let rules = engine.rules();
    let names: Vec<&str> = rules.specs().iter().map(|(r, _)| &*r.name).collect();
    assert_eq!((rules.version(), names), (2, vec!["api-rule"]));
    assert_eq!(fired(&engine, "fresh"), ["api-rule"]);
    assert_eq!(engine.triggers().version(), 2);
    assert_eq!(scroll(&engine, "reader", 0.9), ["deep"]);
    assert!(
        scroll(&engine, "skimmer", 0.05).is_empty(),
        "the file's trigger is not in force"
    );
    let versions = engine.template_versions("t").unwrap();
    assert_eq!((versions.all.len(), versions.current), (2, 1));
    assert_eq!(versions.all[1].spec().body, "two {{s}}");
    let d = engine
        .decide_template(TemplateRequest::new("u", "t"))
        .unwrap();
    assert_eq!((d.version, d.rendered.as_str()), (1, "one A"));
    assert_eq!(segment_of(&engine, "a-5"), (id, Some("a-fans".into())));
    assert_ne!(segment_of(&engine, "b-5").0, id);
    // Numbers continue: no version is given twice.
    assert_eq!(
        engine.register_template(template("three {{s}}")).unwrap(),
        3
    );
    assert_eq!(engine.set_rules(&[rule("api-rule", "b0")]).unwrap(), 3);
    engine.shutdown();
    drop(engine);
    let log = dir.path().join("definitions.log");
    let length = std::fs::metadata(&log).unwrap().len();

    // A clean restart: the same again, and nothing new written (the file's sets are not
    // logged again, nor is anything replayed into the log).
    let engine = start(config(dir.path(), file), &clock);
    assert_eq!(std::fs::metadata(&log).unwrap().len(), length);
    assert_eq!(engine.rules().version(), 3);
    assert_eq!(engine.template("t").unwrap().version(), 3);
    assert_eq!(engine.triggers().version(), 2);
    assert_eq!(segment_of(&engine, "a-5"), (id, Some("a-fans".into())));
    engine.shutdown();
}

#[test]
fn the_file_is_the_baseline_and_a_set_given_over_the_api_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let with = |rules: Vec<RuleConfig>, body: &'static str| {
        let dir = dir.path().to_path_buf();
        move || {
            config(&dir, |c| {
                c.rules = rules.clone();
                c.templates = vec![nudge::config::TemplateConfig {
                    name: "t".into(),
                    body: body.into(),
                    slots: vec![nudge::config::TemplateSlotConfig {
                        name: "s".into(),
                        variants: vec![nudge::config::TemplateVariantConfig {
                            id: "a".into(),
                            text: "A".into(),
                            ..Default::default()
                        }],
                    }],
                    ..Default::default()
                }];
            })
        }
    };
    let rule_names = |e: &Engine| -> Vec<String> {
        e.rules()
            .specs()
            .iter()
            .map(|(r, _)| r.name.clone())
            .collect()
    };
    let first = with(vec![rule("one", "a0")], "1 {{s}}");
    let e = start(first(), &clock);
    assert_eq!(
        (e.rules().version(), rule_names(&e)),
        (1, vec!["one".into()])
    );
    assert_eq!(e.template("t").unwrap().version(), 1);
    drop(e);

    // The file changed and nothing was given over the API since: the file's set, as the next
    // version.
    let second = with(vec![rule("two", "a0")], "2 {{s}}");
    let e = start(second(), &clock);
    assert_eq!(
        (e.rules().version(), rule_names(&e)),
        (2, vec!["two".into()])
    );
    let t = e.template("t").unwrap();
    assert_eq!((t.version(), t.spec().body.as_str()), (2, "2 {{s}}"));
    // Unchanged file: the same versions.
    drop(e);
    let e = start(second(), &clock);
    assert_eq!(e.rules().version(), 2);
    assert_eq!(e.template("t").unwrap().version(), 2);

    // Over the API, then the file changes again: the API's stay in force.
    e.set_rules(&[rule("api", "b0")]).unwrap();
    e.rollback_template("t", 1).unwrap();
    drop(e);
    let third = with(vec![rule("three", "a0")], "3 {{s}}");
    let e = start(third(), &clock);
    assert_eq!(
        (e.rules().version(), rule_names(&e)),
        (3, vec!["api".into()])
    );
    let versions = e.template_versions("t").unwrap();
    assert_eq!((versions.all.len(), versions.current), (2, 1));
    // Emptying the rules over the API is a set like any other.
    assert_eq!(e.set_rules(&[]).unwrap(), 4);
    drop(e);
    let e = start(third(), &clock);
    assert_eq!((e.rules().version(), e.rules().is_empty()), (4, true));
    e.shutdown();
}

#[test]
fn a_damaged_record_in_the_middle_refuses_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let e = start(config(dir.path(), |_| {}), &clock);
    e.set_rules(&[rule("r", "a0")]).unwrap();
    e.register_template(template("{{s}}")).unwrap();
    drop(e);
    let log = dir.path().join("definitions.log");
    let mut bytes = std::fs::read(&log).unwrap();
    // The first record's body (after the format byte and its 8-byte header).
    bytes[1 + 8 + 3] ^= 0x55;
    std::fs::write(&log, &bytes).unwrap();
    let err = Engine::builder()
        .config(config(dir.path(), |_| {}))
        .clock(clock.clone())
        .build()
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains(&log.display().to_string()), "{err}");
    assert!(err.contains("damaged record"), "{err}");

    // A torn last record (a crash mid-append) is cut, and what came before is back.
    bytes[1 + 8 + 3] ^= 0x55;
    bytes.truncate(bytes.len() - 3);
    std::fs::write(&log, &bytes).unwrap();
    let e = start(config(dir.path(), |_| {}), &clock);
    assert_eq!(e.rules().version(), 1);
    assert!(e.template("t").is_none(), "the torn registration is gone");
    e.shutdown();
}

/// Real `nudge serve` processes (the binary is built with the `cli` feature).
#[cfg(feature = "cli")]
mod served {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};

    /// A `nudge serve` child with its stderr in a file, and its TCP address from the banner.
    struct Served {
        child: Child,
        addr: SocketAddr,
    }

    // `Served`'s `Drop` kills and reaps the child; clippy cannot see through the struct.
    #[allow(clippy::zombie_processes)]
    fn serve(dir: &Path, config: &Path, stderr: &Path) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nudge"))
            .args([
                "serve",
                "--tcp",
                "127.0.0.1:0",
                "--http",
                "",
                "--shards",
                "1",
            ])
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(dir)
            .env("NUDGE_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(stderr).unwrap())
            .spawn()
            .expect("spawn nudge");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            if out.read_line(&mut line).unwrap_or(0) == 0 {
                let status = child.wait();
                let err = std::fs::read_to_string(stderr).unwrap_or_default();
                panic!("nudge exited before its banner: {status:?}\n{err}");
            }
            if let Some(rest) = line.trim().strip_prefix("tcp") {
                let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
                std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
                return Served { child, addr };
            }
        }
    }

    impl Served {
        /// Sends one request line and returns the reply line.
        fn ask(&self, request: &str) -> String {
            let mut s = TcpStream::connect(self.addr).unwrap();
            writeln!(s, "{request}").unwrap();
            let mut reply = String::new();
            BufReader::new(s).read_line(&mut reply).unwrap();
            reply
        }
    }

    impl Drop for Served {
        fn drop(&mut self) {
            let _ = self.child.kill(); // SIGKILL: no shutdown, no checkpoint
            let _ = self.child.wait();
        }
    }

    #[test]
    fn nudge_serve_keeps_rules_set_over_the_wire_across_a_sigkill_and_warns_of_a_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let config = dir.path().join("nudge.toml");
        let stderr = dir.path().join("stderr.txt");
        let file_rule = |name: &str| {
            format!(
                "[[rules]]\nname = \"{name}\"\naction = \"exclude\"\nitems = \"item.id == 'x'\"\n"
            )
        };
        std::fs::write(&config, file_rule("from-file")).unwrap();
        let served = serve(&data, &config, &stderr);
        let set = r#"{"op":"rules","id":1,"rules":[{"name":"over-the-wire","action":"exclude","items":"item.id == 'y'"}]}"#;
        let reply = served.ask(set);
        assert!(reply.contains(r#""version":2"#), "{reply}");
        drop(served); // SIGKILL

        std::fs::write(&config, file_rule("edited")).unwrap();
        let served = serve(&data, &config, &stderr);
        let reply = served.ask(r#"{"op":"rules","id":2}"#);
        assert!(reply.contains(r#""version":2"#), "{reply}");
        assert!(reply.contains("over-the-wire"), "{reply}");
        assert!(!reply.contains("edited"), "{reply}");
        drop(served);
        let log = std::fs::read_to_string(&stderr).unwrap();
        assert!(log.contains("WARN"), "{log}");
        assert!(log.contains("stays in force"), "{log}");
        assert!(
            log.contains("rules: version 2, given over the API"),
            "{log}"
        );
    }
}
