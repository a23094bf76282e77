//! Making client-controlled text safe to log: a CR, LF or escape sequence in a
//! `wsa:MessageID`, a tenant header or a path must not forge a log line or drive the
//! operator's terminal.

use std::borrow::Cow;

/// Characters that break or reorder a line on a terminal or in a log viewer: controls,
/// line and paragraph separators, bidirectional overrides and isolates, BOM.
fn unsafe_in_logs(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{FEFF}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every character that could forge or hide log content written as `\u{..}`.
pub fn log_safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_in_logs) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_in_logs(c) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`log_safe`], at most `max` characters: text from the network in a message.
pub fn shown(text: &str, max: usize) -> String {
    log_safe(text).chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert!(matches!(log_safe("urn:uuid:1"), Cow::Borrowed(_)));
        assert_eq!(
            log_safe("id\r\nINFO forged line\u{1b}[31m"),
            "id\\u{d}\\u{a}INFO forged line\\u{1b}[31m"
        );
        assert_eq!(log_safe("a\u{2028}b\u{202e}c"), "a\\u{2028}b\\u{202e}c");
    }
}
