//! Load-testing harness for nudge (stub until its issue lands).
use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() {
    eprintln!("loadtest: not built yet; see the load-testing issue");
    std::process::exit(2);
}
