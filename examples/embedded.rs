//! nudge embedded in a backend: start an engine, load a small catalog, stream a few users'
//! events, and watch one shopper's ranking shift as they click.
//!
//! Run: `cargo run --release --example embedded`

use mimalloc::MiMalloc;
use nudge::{DecideRequest, Decision, Engine, Event, EventKind, ItemSpec};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

const SHOP: [(&str, [&str; 4]); 5] = [
    (
        "shoes",
        [
            "trail-runner",
            "leather-boot",
            "canvas-sneaker",
            "hiking-boot",
        ],
    ),
    (
        "books",
        ["sci-fi-novel", "cookbook", "travel-guide", "poetry"],
    ),
    (
        "garden",
        ["pruning-shears", "seed-kit", "watering-can", "rake"],
    ),
    (
        "music",
        ["vinyl-jazz", "headphones", "guitar-strings", "metronome"],
    ),
    (
        "winter",
        ["wool-scarf", "down-jacket", "thermal-gloves", "beanie"],
    ),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::builder().shards(2).seed(7).build()?;
    let mut catalog = Vec::new();
    for (category, items) in SHOP {
        for (i, item) in items.iter().enumerate() {
            let price = if i % 2 == 0 { "budget" } else { "premium" };
            engine.upsert_item(
                ItemSpec::new(*item)
                    .attr("category", category)
                    .attr("price", price),
            )?;
            catalog.push(item.to_string());
        }
    }
    println!(
        "nudge embedded: {} shards, {} items, d = {}\n",
        engine.shard_count(),
        catalog.len(),
        engine.config().model.dim
    );

    // Background traffic: other shoppers with their own tastes.
    let others = [("ana", "books"), ("ben", "music"), ("cyd", "winter")];
    for round in 0..5 {
        for (user, category) in others {
            let items = SHOP
                .iter()
                .find(|(c, _)| *c == category)
                .map(|(_, i)| i)
                .unwrap();
            engine.ingest(Event::new(user, EventKind::Click).item(items[round % 4]))?;
        }
    }

    let shopper = "dana";
    let show = |title: &str, d: &Decision| {
        let line: Vec<String> = d
            .items
            .iter()
            .map(|p| format!("{} ({:.2})", p.item, p.score))
            .collect();
        println!("{title:<34} {}", line.join(", "));
    };
    let request =
        || DecideRequest::new(shopper, catalog.iter().cloned(), 5).context("device", "mobile");
    show("dana, first visit:", &engine.decide(request())?);

    // Dana browses garden tools: a click, a long dwell, another click.
    engine.ingest(
        Event::new(shopper, EventKind::Click)
            .item("seed-kit")
            .context("device", "mobile"),
    )?;
    show("after clicking seed-kit:", &engine.decide(request())?);
    engine.ingest(
        Event::new(shopper, EventKind::Dwell)
            .item("pruning-shears")
            .value(45.0),
    )?;
    show("after 45 s on pruning-shears:", &engine.decide(request())?);
    engine.ingest(Event::new(shopper, EventKind::Click).item("watering-can"))?;
    let d = engine.decide(request().explain(true))?;
    show("after clicking watering-can:", &d);

    // She buys the top suggestion: the reward goes straight to the decision's shard.
    engine.reward(d.id, &d.items[0].item, 1.0)?;
    if let Some(parts) = d.items[0].explain {
        println!(
            "\nwhy {} is first: bias {:+.2}, global {:+.2}, personal {:+.2}, context {:+.2}, recent activity {:+.2}",
            d.items[0].item, parts.bias, parts.global, parts.personal, parts.context, parts.state
        );
    }

    let export = engine.user(shopper)?.expect("dana has state");
    println!(
        "\ndana's export: {} events, {} decisions, {} training steps, {:.1} clicks/hour, {} open decisions",
        export.events_by_kind.iter().sum::<u64>(),
        export.decisions,
        export.training_steps,
        export.signals.clicks_per_hour,
        export.open_decisions.len()
    );
    engine.forget(shopper)?;
    println!(
        "after forget: {:?}",
        engine.user(shopper)?.map(|_| "still there")
    );
    let stats = engine.stats().total();
    println!(
        "engine: {} events, {} decisions, {} rewards attributed",
        stats.events_total, stats.decisions_total, stats.rewards_attributed_total
    );
    engine.shutdown();
    Ok(())
}
