//! Set-up shared by the engine-level benches: a 2-shard engine (with `NUDGE_*` overrides) and a
//! seeded catalog of `items` items, `item-0…`, in 50 categories with 32-dim vectors.
//! `NUDGE_BENCH_SHARDS` changes the shard count.

use nudge::rng::Rng;
use nudge::{Engine, ItemSpec};

/// A 2-shard engine (or `NUDGE_BENCH_SHARDS`) holding `items` catalog items.
pub fn engine_with_catalog(items: usize) -> Engine {
    let shards = std::env::var("NUDGE_BENCH_SHARDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let engine = Engine::builder()
        .config(nudge::Config::load(None).expect("NUDGE_* overrides"))
        .shards(shards)
        .seed(5)
        .build()
        .unwrap();
    let mut rng = Rng::new(9);
    for i in 0..items {
        let v: Vec<f32> = (0..32).map(|_| rng.normal() as f32).collect();
        let spec = ItemSpec::new(format!("item-{i}")).attr("category", format!("c{}", i % 50));
        engine.upsert_item(spec.vector(v)).unwrap();
    }
    engine
}
