//! Property tests of the wire parser (proptest): any bytes give a request or an error, never
//! a panic; and replies to any parsed request are valid JSON.

use nudge::wire::{write_reply, Parser, Reply};
use proptest::prelude::*;

pub const FRAGMENTS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"op\"",
    "\"event\"",
    "\"decide\"",
    "\"batch\"",
    "\"ops\"",
    "\"user\"",
    "\"u1\"",
    "\"type\"",
    "\"click\"",
    "\"item\"",
    "\"candidates\"",
    "\"id\"",
    "1",
    "-1",
    "1e400",
    "null",
    "true",
    "\"\\u0000\"",
    "\"attrs\"",
    "\"vector\"",
    "\"context\"",
    "\"ts\"",
    "18446744073709551616",
    "\"decision\"",
    "\"0001000000000001\"",
    " ",
    "\n",
    "\"\\\"",
];

proptest! {
    #[test]
    fn parser_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut parser = Parser::new();
        let mut input = bytes.clone();
        if let Err(rejected) = parser.parse(&mut input, None) {
            // Issue 16: errors speak the client's terms, not the parser's.
            let text = rejected.error.to_string();
            prop_assert!(!text.contains("Error") && !text.contains("Tape"), "{}", text);
        }
        let _ = parser.parse_events(&bytes);
        let _ = parser.parse_segment(&mut bytes.clone(), None);
        let _ = nudge::wire::recover_id(&bytes);
    }

    #[test]
    fn parser_never_panics_on_json_like_input(parts in proptest::collection::vec(0..FRAGMENTS.len(), 0..64)) {
        let text: String = parts.iter().map(|&i| FRAGMENTS[i]).collect();
        let mut parser = Parser::new();
        let mut out = Vec::new();
        match parser.parse(&mut text.clone().into_bytes(), None) {
            Ok(req) => write_reply(&mut out, &req.id, &Reply::Pong),
            Err(rej) => write_reply(&mut out, &rej.id, &Reply::Failed(rej.error)),
        }
        prop_assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok(), "{}", String::from_utf8_lossy(&out));
        let _ = parser.parse_segment(&mut text.into_bytes(), None);
    }
}

/// Issue 12: the wire layer sits below the engine. Parsing needs no `Engine` (the signatures
/// above say so), and no file of `src/wire` imports the engine.
#[test]
fn issue12_wire_does_not_import_the_engine() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/wire");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).expect("src/wire") {
        let path = entry.expect("a directory entry").path();
        let text = std::fs::read_to_string(&path).expect("a source file");
        for needle in ["crate::engine", "engine::", "Engine::builder"] {
            assert!(
                !text.contains(needle),
                "{} names the engine (`{needle}`)",
                path.display()
            );
        }
        files += 1;
    }
    assert!(files >= 5, "read {files} files of {}", dir.display());
}
