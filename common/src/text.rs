//! Text that another machine chose (a store's error message, a node's
//! report, a manifest's secret names), made safe to print or log: one
//! escaping function, shared by the controller (before a terminal) and the
//! agent (before its log). Never sees a value: callers pass names, ids and
//! server messages only.

/// The longest piece of foreign text kept by [`escape_text`] callers that
/// have no better bound (in characters).
pub const FOREIGN_TEXT_MAX: usize = 300;

/// Text from another machine, made safe to print: control characters and
/// the bidirectional-override marks that reorder a terminal line become
/// `\u{..}`, and the text is cut after `max` characters (`...` appended).
pub fn escape_text(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max + 8));
    for (n, c) in text.chars().enumerate() {
        if n == max {
            out.push_str("...");
            break;
        }
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_text_neutralises_terminal_controls_and_cuts() {
        let hostile = "denied\x1b[2J\x1b]0;owned\x07\r\nfake: ok\u{202e}txt.exe";
        let shown = escape_text(hostile, 300);
        assert!(!shown.chars().any(|c| c.is_control()), "{shown}");
        assert!(!shown.contains('\u{202e}'), "{shown}");
        assert_eq!(
            shown,
            "denied\\u{1b}[2J\\u{1b}]0;owned\\u{7}\\u{d}\\u{a}fake: ok\\u{202e}txt.exe"
        );
        assert_eq!(escape_text("abcdef", 3), "abc...");
        assert_eq!(escape_text("abc", 3), "abc");
        assert_eq!(escape_text("\u{e9}t\u{e9}", 10), "\u{e9}t\u{e9}");
    }
}
