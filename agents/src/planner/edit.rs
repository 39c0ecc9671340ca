//! Text edits at byte spans of the stack's files, and the layout-keeping helpers that build
//! them: insert a field into a record literal, an element into an array literal, remove an
//! element. Edits become [`Edit`]s whose `old` text occurs exactly once in its file (widened by
//! whole lines until it does), so the verifier can apply them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::syntax::{Id, Kind, Span, Tree};
use crate::Edit;

/// Replace `span` of `file` with `text` (an insertion when the span is empty).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    pub file: PathBuf,
    pub span: Span,
    pub text: String,
}

/// Applies `changes` to `texts`: the edited files. Overlapping changes are an error.
pub fn apply(
    texts: &BTreeMap<PathBuf, String>,
    changes: &[Change],
) -> Result<BTreeMap<PathBuf, String>, String> {
    let mut out = BTreeMap::new();
    for (file, mut cs) in by_file(changes) {
        let mut text = texts
            .get(&file)
            .ok_or_else(|| format!("no file `{}`", file.display()))?
            .clone();
        cs.sort_by_key(|c| std::cmp::Reverse(c.span));
        let mut floor = usize::MAX;
        for c in cs {
            if c.span.1 > floor {
                return Err(format!(
                    "two changes overlap in `{}` at byte {}",
                    file.display(),
                    c.span.0
                ));
            }
            text.replace_range(c.span.0..c.span.1, &c.text);
            floor = c.span.0;
        }
        out.insert(file, text);
    }
    Ok(out)
}

fn by_file(changes: &[Change]) -> BTreeMap<PathBuf, Vec<Change>> {
    let mut m: BTreeMap<PathBuf, Vec<Change>> = BTreeMap::new();
    for c in changes {
        m.entry(c.file.clone()).or_default().push(c.clone());
    }
    m
}

/// The changes as [`Edit`]s, last in the file first, each quoting text that occurs once in the
/// file as the edits before it leave it.
pub fn to_edits(
    texts: &BTreeMap<PathBuf, String>,
    changes: &[Change],
) -> Result<Vec<Edit>, String> {
    let mut edits = Vec::new();
    for (file, mut cs) in by_file(changes) {
        let mut text = texts
            .get(&file)
            .ok_or_else(|| format!("no file `{}`", file.display()))?
            .clone();
        cs.sort_by_key(|c| std::cmp::Reverse(c.span));
        cs.dedup();
        for c in cs {
            let (s, e) = unique(&text, c.span);
            let old = text[s..e].to_string();
            let new = format!("{}{}{}", &text[s..c.span.0], c.text, &text[c.span.1..e]);
            text.replace_range(s..e, &new);
            edits.push(Edit {
                file: file.clone(),
                old,
                new,
            });
        }
    }
    Ok(edits)
}

/// The smallest range around `span` whose text occurs once in `text`: the span itself, else
/// its whole lines, else more lines around them.
fn unique(text: &str, span: Span) -> Span {
    let once = |s: usize, e: usize| e > s && text.matches(&text[s..e]).count() == 1;
    if once(span.0, span.1) && span.1 - span.0 >= 3 {
        return span;
    }
    let mut s = line_start(text, span.0);
    let mut e = line_end(text, span.1);
    let mut up = true;
    while !once(s, e) {
        if (up && s > 0) || e >= text.len() {
            s = line_start(text, s.saturating_sub(1));
        } else {
            e = line_end(text, e + 1);
        }
        up = !up;
        if s == 0 && e >= text.len() {
            break;
        }
    }
    (s, e)
}

fn line_start(text: &str, pos: usize) -> usize {
    text[..pos].rfind('\n').map(|i| i + 1).unwrap_or(0)
}

fn line_end(text: &str, pos: usize) -> usize {
    let pos = pos.min(text.len());
    text[pos..]
        .find('\n')
        .map(|i| pos + i)
        .unwrap_or(text.len())
}

/// A string literal.
pub fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '%' => out.push_str("\\%"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An enum tag (`'large`, `'"2xlarge"`).
pub fn tag(s: &str) -> String {
    if is_ident(s) {
        format!("'{s}")
    } else {
        format!("'{}", quote(s))
    }
}

/// A record field's name as written (quoted unless it is an identifier).
pub fn field_name(s: &str) -> String {
    if is_ident(s) { s.to_string() } else { quote(s) }
}

fn is_ident(s: &str) -> bool {
    let mut cs = s.chars();
    cs.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '\'')
}

/// Where the text between `open` (`{` or `[`) at `span.0` and its first item has a newline:
/// a literal laid out one item per line.
fn multiline(tree: &Tree, span: Span, first: Option<Span>) -> bool {
    let end = first.map(|f| f.0).unwrap_or(span.1);
    tree.text[span.0..end].contains('\n')
}

/// Inserts `item` (a field definition or an array element, as text) after the last of
/// `items` in the literal at `span`, keeping its layout.
fn insert_item(tree: &Tree, file: &PathBuf, span: Span, items: &[Span], item: &str) -> Change {
    let text = &tree.text;
    let Some(last) = items.last().copied() else {
        // Empty: `{}`/`[]` (maybe with spaces) becomes `{ item }`/`[item]`.
        let open = &text[span.0..span.0 + 1];
        let close = &text[span.1 - 1..span.1];
        let inner = if open == "{" {
            format!("{open} {item} {close}")
        } else {
            format!("{open}{item}{close}")
        };
        return Change {
            file: file.clone(),
            span,
            text: inner,
        };
    };
    // A trailing comma after the last item, if any.
    let rest = &text[last.1..span.1];
    let comma = rest
        .char_indices()
        .find(|(_, c)| !c.is_whitespace())
        .filter(|(_, c)| *c == ',')
        .map(|(i, _)| last.1 + i + 1);
    if multiline(tree, span, items.first().copied()) {
        let indent = tree.indent_at(last.0).to_string();
        match comma {
            Some(after) => Change {
                file: file.clone(),
                span: (after, after),
                text: format!("\n{indent}{item},"),
            },
            None => Change {
                file: file.clone(),
                span: (last.1, last.1),
                text: format!(",\n{indent}{item}"),
            },
        }
    } else {
        Change {
            file: file.clone(),
            span: (last.1, last.1),
            text: format!(", {item}"),
        }
    }
}

/// Adds field `name = value` to the record literal `record`.
pub fn add_field(
    tree: &Tree,
    file: &PathBuf,
    record: Id,
    name: &str,
    value: &str,
) -> Option<Change> {
    let Kind::Record(fields) = tree.kind(record) else {
        return None;
    };
    let items: Vec<Span> = fields.iter().map(|f| f.span).collect();
    Some(insert_item(
        tree,
        file,
        tree.span(record),
        &items,
        &format!("{} = {value}", field_name(name)),
    ))
}

/// Appends `element` to the array literal `array`.
pub fn push_element(tree: &Tree, file: &PathBuf, array: Id, element: &str) -> Option<Change> {
    let Kind::Array(items) = tree.kind(array) else {
        return None;
    };
    let spans: Vec<Span> = items.iter().map(|i| tree.span(*i)).collect();
    Some(insert_item(tree, file, tree.span(array), &spans, element))
}

/// Removes element `index` of the array literal `array`, with its separator (and its line, when
/// the array is laid out one element per line).
pub fn remove_element(tree: &Tree, file: &PathBuf, array: Id, index: usize) -> Option<Change> {
    let Kind::Array(items) = tree.kind(array) else {
        return None;
    };
    let spans: Vec<Span> = items.iter().map(|i| tree.span(*i)).collect();
    let el = *spans.get(index)?;
    let text = &tree.text;
    let span = if multiline(tree, tree.span(array), spans.first().copied()) {
        // The element and the comma after it; its whole line when it has the line to itself
        // (a comment after it goes with it).
        let mut e =
            el.1 + (text[el.1..].len() - text[el.1..].trim_start_matches([' ', '\t']).len());
        if text[e..].starts_with(',') {
            e += 1;
        }
        let s = tree.line_start(el.0);
        let le = tree.line_end(e);
        let tail = text[e..le].trim();
        if text[s..el.0].trim().is_empty() && (tail.is_empty() || tail.starts_with('#')) {
            (s, (le + 1).min(text.len()))
        } else {
            (el.0, e)
        }
    } else if let Some(next) = spans.get(index + 1) {
        (el.0, next.0)
    } else if index > 0 {
        (spans[index - 1].1, el.1)
    } else {
        el
    };
    Some(Change {
        file: file.clone(),
        span,
        text: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(t: &str) -> Tree {
        Tree::parse("t.ncl", t).unwrap()
    }

    fn first(t: &Tree, pred: impl Fn(&Kind) -> bool) -> Id {
        (0..t.nodes.len()).find(|&i| pred(t.kind(i))).unwrap()
    }

    fn run(t: &Tree, c: Change) -> String {
        let mut s = t.text.clone();
        s.replace_range(c.span.0..c.span.1, &c.text);
        s
    }

    #[test]
    fn fields_and_elements_go_in_with_the_layout_of_their_literal() {
        let f = PathBuf::from("t.ncl");
        let t = tree("{ a = 1, b = 2 }");
        let r = first(&t, |k| matches!(k, Kind::Record(_)));
        assert_eq!(
            run(&t, add_field(&t, &f, r, "c", "3").unwrap()),
            "{ a = 1, b = 2, c = 3 }"
        );
        let t = tree("{\n  a = 1,\n  b = 2,\n}");
        let r = first(&t, |k| matches!(k, Kind::Record(_)));
        assert_eq!(
            run(&t, add_field(&t, &f, r, "cost-center", "\"x\"").unwrap()),
            "{\n  a = 1,\n  b = 2,\n  cost-center = \"x\",\n}"
        );
        let t = tree("[\n  1, # one\n  2,\n  3,\n]");
        let a = first(&t, |k| matches!(k, Kind::Array(_)));
        assert_eq!(
            run(&t, remove_element(&t, &f, a, 1).unwrap()),
            "[\n  1, # one\n  3,\n]"
        );
        assert_eq!(
            run(&t, push_element(&t, &f, a, "4").unwrap()),
            "[\n  1, # one\n  2,\n  3,\n  4,\n]"
        );
        let t = tree("[1, 2, 3]");
        let a = first(&t, |k| matches!(k, Kind::Array(_)));
        assert_eq!(run(&t, remove_element(&t, &f, a, 2).unwrap()), "[1, 2]");
        assert_eq!(run(&t, remove_element(&t, &f, a, 0).unwrap()), "[2, 3]");
        assert_eq!(
            run(&t, push_element(&t, &f, a, "4").unwrap()),
            "[1, 2, 3, 4]"
        );
    }

    #[test]
    fn an_edit_quotes_text_that_occurs_once() {
        let texts = BTreeMap::from([(PathBuf::from("t.ncl"), "x = 1,\ny = 1,\n".to_string())]);
        let c = Change {
            file: PathBuf::from("t.ncl"),
            span: (11, 12),
            text: "2".into(),
        };
        let e = to_edits(&texts, &[c]).unwrap();
        assert_eq!(e[0].old, "y = 1,");
        assert_eq!(e[0].new, "y = 2,");
    }
}
