//! Small JSON writing helpers over a `Vec<u8>`: escaped strings and numbers. Replies are written
//! by hand with these, straight into the connection's output buffer (no intermediate tree).

use std::io::Write as _;

use super::ReqId;

/// Appends `s` as a JSON string literal (quoted and escaped).
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            // Other control characters: \u00XX.
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends an unsigned integer.
pub fn write_u64(out: &mut Vec<u8>, v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends a float in its shortest round-tripping form; NaN and infinities become `null`.
pub fn write_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        let _ = write!(out, "{v}");
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Appends an `f32` (shortest form of the `f32`, not of its widening).
pub fn write_f32(out: &mut Vec<u8>, v: f32) {
    if v.is_finite() {
        let _ = write!(out, "{v}");
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Appends `true` or `false`.
pub fn write_bool(out: &mut Vec<u8>, v: bool) {
    out.extend_from_slice(if v { b"true" } else { b"false" });
}

/// Appends a request id (`null` when absent).
pub fn write_id(out: &mut Vec<u8>, id: &ReqId) {
    match id {
        ReqId::None => out.extend_from_slice(b"null"),
        ReqId::Int(i) if *i < 0 => {
            out.push(b'-');
            write_u64(out, i.unsigned_abs());
        }
        ReqId::Int(i) => write_u64(out, *i as u64),
        ReqId::Uint(u) => write_u64(out, *u),
        ReqId::Float(f) => write_f64(out, *f),
        ReqId::Str(s) => write_str(out, s),
    }
}

/// Appends `"key":` (the key must need no escaping).
pub fn key(out: &mut Vec<u8>, k: &str) {
    out.push(b'"');
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b"\":");
}

/// Appends an array of `f32`.
pub fn write_f32s(out: &mut Vec<u8>, v: &[f32]) {
    out.push(b'[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_f32(out, *x);
    }
    out.push(b']');
}

/// `["a","b"]`: strings as a JSON array.
pub(super) fn write_strs<'a>(out: &mut Vec<u8>, all: impl IntoIterator<Item = &'a str>) {
    out.push(b'[');
    for (i, s) in all.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, s);
    }
    out.push(b']');
}

/// `[{…},{…}]`: each element's fields written by `fields`, between its braces.
pub(super) fn objects<T>(out: &mut Vec<u8>, all: &[T], mut fields: impl FnMut(&mut Vec<u8>, &T)) {
    out.push(b'[');
    for (i, x) in all.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        fields(out, x);
        out.push(b'}');
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_and_parse_back() {
        let mut out = Vec::new();
        let s = "a\"b\\c\nd\u{1}é";
        write_str(&mut out, s);
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn numbers() {
        let mut out = Vec::new();
        write_u64(&mut out, 0);
        out.push(b' ');
        write_u64(&mut out, u64::MAX);
        out.push(b' ');
        write_id(&mut out, &ReqId::Int(-42));
        out.push(b' ');
        write_f32(&mut out, 0.71);
        out.push(b' ');
        write_f64(&mut out, f64::NAN);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "0 18446744073709551615 -42 0.71 null"
        );
    }
}
