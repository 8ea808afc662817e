//! Log lines that the data they mention cannot forge.
//!
//! A request's uid, a policy's message or a line a policy printed are
//! chosen by whoever sent the request or wrote the policy. Written into a
//! text log as they are, a newline in one starts a forged log line and an
//! escape byte talks to the operator's terminal. The text format therefore
//! escapes every control character in every field; the JSON format is
//! escaped by JSON itself.

use std::fmt::{self, Write as _};

use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{self, FormatFields};

/// The field formatter of text logs: `message key=value ...`, with control
/// characters (and Unicode line separators) written as escapes.
pub fn escaping_text_fields() -> impl for<'writer> FormatFields<'writer> + Send + Sync + 'static {
    format::debug_fn(|writer, field, value| {
        let text = format!("{value:?}");
        if field.name() == "message" {
            write!(writer, "{}", Escaped(&text))
        } else {
            write!(writer, "{}={}", field.name(), Escaped(&text))
        }
    })
    .delimited(" ")
}

/// Text with every control character escaped (`\n`, `\u{1b}`, ...).
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        let forged = "ok\n2026-01-01T00:00:00Z  INFO forged\u{1b}[31m \u{85}é\u{2028}";
        assert_eq!(
            Escaped(forged).to_string(),
            "ok\\n2026-01-01T00:00:00Z  INFO forged\\u{1b}[31m \\u{85}é\\u{2028}"
        );
    }
}
