//! Keeping pull request bodies and comments under GitHub's size limit.

use std::borrow::Cow;

/// GitHub refuses pull request bodies and comments longer than this many characters.
pub const BODY_LIMIT: usize = 65_536;

/// At most this many `<details>` blocks left open by a cut are closed again.
const DETAILS_MAX: usize = 4;

const DETAILS_CLOSE: &str = "\n</details>";

/// How far back (in characters) a cut may move to end on a whole line.
const LINE_SLACK: usize = 2_000;

/// `text` if it fits in `limit`, else its beginning and a `… (truncated: N characters
/// omitted)` marker, all within `limit`.
///
/// Length is counted in UTF-16 code units, which is never less than the count of characters
/// (so the result fits whichever way the limit is counted), and the cut is on a character
/// boundary, preferably at the end of a line. A code fence left open by the cut is closed, and
/// so are `<details>` blocks (up to four), so the marker and whatever follows the text render
/// as they should.
pub fn truncate_body(text: &str, limit: usize) -> Cow<'_, str> {
    if units(text) <= limit {
        return Cow::Borrowed(text);
    }
    let total_chars = text.chars().count();
    // The marker is widest when every character is omitted; room to close one fence (as long
    // as the longest run of backticks) and a few `<details>`.
    let reserve = units(&marker(total_chars))
        + 1
        + longest_backtick_run(text)
        + DETAILS_MAX * DETAILS_CLOSE.len();
    let budget = limit.saturating_sub(reserve);
    let mut end = 0;
    let mut used = 0;
    let mut kept_chars = 0;
    for (i, c) in text.char_indices() {
        if used + c.len_utf16() > budget {
            break;
        }
        used += c.len_utf16();
        kept_chars += 1;
        end = i + c.len_utf8();
    }
    // End on a whole line when one ends close enough before the cut.
    if let Some(nl) = text[..end].rfind('\n') {
        let dropped = text[nl..end].chars().count();
        if dropped <= LINE_SLACK {
            kept_chars -= dropped;
            end = nl;
        }
    }
    let kept = &text[..end];
    let mut out = String::with_capacity(end + reserve);
    out.push_str(kept);
    let (fence, details) = left_open(kept);
    if let Some(fence) = fence {
        out.push('\n');
        out.push_str(&fence);
    }
    for _ in 0..details.min(DETAILS_MAX) {
        out.push_str(DETAILS_CLOSE);
    }
    out.push_str(&marker(total_chars - kept_chars));
    Cow::Owned(out)
}

/// The code fence open at the end of `text` (its backticks), and how many `<details>` blocks
/// outside code are open.
fn left_open(text: &str) -> (Option<String>, usize) {
    let mut fence: Option<usize> = None;
    let mut details = 0usize;
    for line in text.lines() {
        let t = line.trim_start();
        let run = t.len() - t.trim_start_matches('`').len();
        match fence {
            Some(open) if run >= open && t[run..].trim().is_empty() => fence = None,
            Some(_) => {}
            None if run >= 3 => fence = Some(run),
            None => {
                details += line.matches("<details").count();
                details = details.saturating_sub(line.matches("</details>").count());
            }
        }
    }
    (fence.map(|n| "`".repeat(n)), details)
}

fn longest_backtick_run(text: &str) -> usize {
    text.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

fn marker(omitted: usize) -> String {
    format!("\n\n… (truncated: {omitted} characters omitted)")
}

fn units(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_borrowed() {
        assert!(matches!(truncate_body("hello", 10), Cow::Borrowed("hello")));
    }

    #[test]
    fn long_text_fits_and_says_how_much_was_cut() {
        let text = "é".repeat(100);
        let out = truncate_body(&text, 60);
        assert!(units(&out) <= 60, "{out}");
        let kept = out.chars().take_while(|c| *c == 'é').count();
        assert!(out.ends_with(&format!("(truncated: {} characters omitted)", 100 - kept)));
    }

    #[test]
    fn astral_characters_count_twice() {
        let text = "🦀".repeat(100);
        let out = truncate_body(&text, 80);
        assert!(units(&out) <= 80);
        assert!(out.chars().count() < 80);
    }

    #[test]
    fn open_details_and_long_fences_are_closed() {
        let text = format!(
            "<details><summary>plan</summary>\n\n````diff\n{}````\n</details>\nafter\n",
            "+ line\n".repeat(100)
        );
        let out = truncate_body(&text, 300);
        assert!(units(&out) <= 300, "{out}");
        let (fence, details) = left_open(&out);
        assert_eq!((fence, details), (None, 0), "{out}");
        assert!(out.contains("\n````\n</details>"), "{out}");
    }

    #[test]
    fn an_open_code_fence_is_closed() {
        let text = format!("intro\n```\n{}\n```\n", "line\n".repeat(50));
        let out = truncate_body(&text, 120);
        assert!(units(&out) <= 120);
        let fences = out.lines().filter(|l| l.starts_with("```")).count();
        assert_eq!(fences % 2, 0, "{out}");
    }
}
