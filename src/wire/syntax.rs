//! JSON syntax errors in the client's terms: what was expected and where (a byte offset,
//! counted from 0), never the parser's internal names. simd-json's positions are exact for
//! structure (keys, colons, commas, trailing text) and approximate inside strings, so string
//! problems are named without a position.

use simd_json::ErrorType;

/// Describes why `input` is not one JSON value. `input` is what simd-json left: only string
/// contents may have been rewritten (unescaped) in place, so structure and offsets hold.
pub(super) fn describe(e: &simd_json::Error, input: &[u8]) -> String {
    let at = e.index();
    let found = match input.get(at) {
        Some(&b) if b.is_ascii_graphic() => format!(" (found `{}`)", b as char),
        _ => String::new(),
    };
    let near = |what: &str| format!("{what} at byte {at}{found}");
    match e.error() {
        _ if input.iter().all(u8::is_ascii_whitespace) => "the request is empty".into(),
        ErrorType::InvalidUtf8 => "the request is not valid UTF-8".into(),
        ErrorType::Eof => "the request ends before its JSON value is complete".into(),
        ErrorType::ExpectedObjectKey | ErrorType::KeyMustBeAString | ErrorType::BadKeyType => {
            near("expected a quoted key")
        }
        ErrorType::ExpectedObjectColon => near("expected `:` after a key"),
        ErrorType::ExpectedMapComma | ErrorType::ExpectedMapEnd => {
            near("expected `,` or `}` after a value")
        }
        ErrorType::ExpectedArrayComma => near("expected `,` or `]` after an element"),
        ErrorType::ExpectedNull | ErrorType::ExpectedTrue | ErrorType::ExpectedFalse => {
            near("expected a JSON value (strings need double quotes)")
        }
        ErrorType::InvalidNumber | ErrorType::InvalidExponent | ErrorType::Overflow => {
            near("a number is malformed or out of range")
        }
        ErrorType::InvalidEscape
        | ErrorType::InvalidUnicodeEscape
        | ErrorType::InvalidUnicodeCodepoint => "a string has an invalid `\\` escape".into(),
        ErrorType::UnterminatedString => "a string is not closed".into(),
        // simd-json reports trailing text, and a bare word, as an internal tape error.
        ErrorType::TrailingData | ErrorType::InternalError(_) if ends_value(input, at) => {
            format!("unexpected text after the JSON value, which ends at byte {at}")
        }
        ErrorType::InternalError(_) if input.get(at).is_some_and(u8::is_ascii_alphabetic) => {
            near("expected a JSON value (strings need double quotes)")
        }
        ErrorType::InputTooLarge => "the request is too large to parse".into(),
        _ if has_raw_control(input) => {
            "a string holds a raw control character (escape it, e.g. `\\n` or `\\u0001`)".into()
        }
        _ if unbalanced(input) => "the request ends before its JSON value is complete".into(),
        _ => near("invalid JSON"),
    }
}

/// The byte at `at` closes a complete top-level value.
fn ends_value(input: &[u8], at: usize) -> bool {
    matches!(input.get(at), Some(b'}' | b']')) && !unbalanced(&input[..=at])
}

/// A byte below 0x20 that JSON whitespace does not allow.
fn has_raw_control(input: &[u8]) -> bool {
    input
        .iter()
        .any(|&b| b < 0x20 && !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

/// More `{`/`[` than `}`/`]` outside strings: the value was cut short.
fn unbalanced(input: &[u8]) -> bool {
    let (mut depth, mut in_str, mut escaped) = (0i64, false, false);
    for &b in input {
        match (in_str, b) {
            (true, _) if escaped => escaped = false,
            (true, b'\\') => escaped = true,
            (true, b'"') => in_str = false,
            (false, b'"') => in_str = true,
            (false, b'{' | b'[') => depth += 1,
            (false, b'}' | b']') => depth -= 1,
            _ => {}
        }
    }
    depth > 0 || in_str
}
