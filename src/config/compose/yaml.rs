//! A YAML document as a tree whose every node knows its line, built from
//! saphyr-parser's events. Compose problems must name file and line, which a
//! serde value cannot give; anchors, aliases and merge keys (`<<`) are
//! resolved here the way compose's YAML library does, and compose's own tags
//! `!reset` / `!override` are kept as flags for the merge of several files.

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// Every non-null scalar, as written (numbers and booleans too).
    Str(String),
    Seq(Vec<Node>),
    /// Entries in file order; keys are unique.
    Map(Vec<(String, Node)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub value: Value,
    /// 1-based line where the value is written (an alias: the anchor's line).
    pub line: usize,
    /// 1-based line of the key this node is the value of (0: none). A block
    /// mapping's own line is its first key's, one below the key that owns it:
    /// a problem about a key names this one.
    pub key_line: usize,
    /// Index of the file in its compose set (set by the caller; 0 from [`parse`]).
    pub file: usize,
    /// Tagged `!reset`: removes what earlier files set.
    pub reset: bool,
    /// Tagged `!override`: replaces what earlier files set instead of merging.
    pub replace: bool,
}

/// A YAML syntax error with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl Node {
    pub fn str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        self.value == Value::Null
    }

    /// Mark this node and everything below it as coming from file `i`.
    pub fn set_file(&mut self, i: usize) {
        self.file = i;
        match &mut self.value {
            Value::Seq(s) => s.iter_mut().for_each(|n| n.set_file(i)),
            Value::Map(m) => m.iter_mut().for_each(|(_, n)| n.set_file(i)),
            _ => {}
        }
    }

    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Str(_) => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// Aliases copy whole subtrees; this bounds what a hostile file can expand to.
const MAX_NODES: usize = 1_000_000;

enum Frame {
    Seq {
        items: Vec<Node>,
        line: usize,
        tag: Flags,
        anchor: usize,
    },
    Map {
        entries: Vec<(String, Node)>,
        key: Option<(String, usize)>,
        merges: Vec<Node>,
        line: usize,
        tag: Flags,
        anchor: usize,
    },
}

#[derive(Clone, Copy, Default)]
struct Flags {
    reset: bool,
    replace: bool,
}

fn flags(tag: &Option<std::borrow::Cow<'_, Tag>>) -> Flags {
    match tag.as_deref() {
        Some(t) if t.handle == "!" && t.suffix == "reset" => Flags {
            reset: true,
            replace: false,
        },
        Some(t) if t.handle == "!" && t.suffix == "override" => Flags {
            reset: false,
            replace: true,
        },
        _ => Flags::default(),
    }
}

fn err(span: &Span, message: impl Into<String>) -> YamlError {
    YamlError {
        line: span.start.line(),
        col: span.start.col() + 1,
        message: message.into(),
    }
}

fn count(n: &Node) -> usize {
    1 + match &n.value {
        Value::Seq(s) => s.iter().map(count).sum(),
        Value::Map(m) => m.iter().map(|(_, v)| count(v)).sum(),
        _ => 0,
    }
}

/// Parse the first document of `text` (`None`: the file holds no document).
pub fn parse(text: &str) -> Result<Option<Node>, YamlError> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: BTreeMap<usize, Node> = BTreeMap::new();
    let mut expanded = 0usize;
    loop {
        let (event, span) = match parser.next_event() {
            None => return Ok(None),
            Some(Err(e)) => {
                return Err(YamlError {
                    line: e.marker().line(),
                    col: e.marker().col() + 1,
                    message: e.info().to_string(),
                })
            }
            Some(Ok(x)) => x,
        };
        let line = span.start.line();
        let done: Node = match event {
            Event::StreamEnd => return Ok(None),
            Event::Nothing | Event::StreamStart | Event::DocumentStart(_) | Event::DocumentEnd => {
                continue
            }
            Event::Alias(id) => {
                let n = anchors.get(&id).cloned().ok_or_else(|| {
                    err(&span, "alias of an anchor that is not complete yet (a node cannot contain itself)")
                })?;
                expanded += count(&n);
                if expanded > MAX_NODES {
                    return Err(err(&span, "aliases expand to more than a million nodes"));
                }
                n
            }
            Event::Scalar(text, style, anchor, tag) => {
                let f = flags(&tag);
                let plain_null = style == ScalarStyle::Plain
                    && tag.is_none()
                    && matches!(&*text, "" | "~" | "null" | "Null" | "NULL");
                let n = Node {
                    value: if plain_null {
                        Value::Null
                    } else {
                        Value::Str(text.into_owned())
                    },
                    line,
                    key_line: 0,
                    file: 0,
                    reset: f.reset,
                    replace: f.replace,
                };
                if anchor > 0 {
                    anchors.insert(anchor, n.clone());
                }
                n
            }
            Event::SequenceStart(anchor, tag) => {
                stack.push(Frame::Seq {
                    items: Vec::new(),
                    line,
                    tag: flags(&tag),
                    anchor,
                });
                continue;
            }
            Event::MappingStart(anchor, tag) => {
                stack.push(Frame::Map {
                    entries: Vec::new(),
                    key: None,
                    merges: Vec::new(),
                    line,
                    tag: flags(&tag),
                    anchor,
                });
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq {
                    items,
                    line,
                    tag,
                    anchor,
                }) => {
                    let n = Node {
                        value: Value::Seq(items),
                        line,
                        key_line: 0,
                        file: 0,
                        reset: tag.reset,
                        replace: tag.replace,
                    };
                    if anchor > 0 {
                        anchors.insert(anchor, n.clone());
                    }
                    n
                }
                _ => return Err(err(&span, "unbalanced sequence")),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    entries,
                    merges,
                    line,
                    tag,
                    anchor,
                    ..
                }) => {
                    let n = Node {
                        value: Value::Map(apply_merges(entries, merges)),
                        line,
                        key_line: 0,
                        file: 0,
                        reset: tag.reset,
                        replace: tag.replace,
                    };
                    if anchor > 0 {
                        anchors.insert(anchor, n.clone());
                    }
                    n
                }
                _ => return Err(err(&span, "unbalanced mapping")),
            },
        };
        match stack.last_mut() {
            // The first document is all compose reads.
            None => return Ok(Some(done)),
            Some(Frame::Seq { items, .. }) => items.push(done),
            Some(Frame::Map {
                entries,
                key,
                merges,
                ..
            }) => match key.take() {
                None => {
                    let k = match &done.value {
                        Value::Str(s) => s.clone(),
                        Value::Null => String::new(),
                        _ => {
                            return Err(err(
                                &span,
                                format!("a mapping key must be a scalar, found {}", done.kind()),
                            ))
                        }
                    };
                    *key = Some((k, done.line));
                }
                Some((k, kline)) if k == "<<" => match done.value {
                    Value::Map(_) => merges.push(done),
                    Value::Seq(items) => {
                        for item in items {
                            if !matches!(item.value, Value::Map(_)) {
                                return Err(err(
                                    &span,
                                    "a merge key (<<) takes a mapping or a list of mappings",
                                ));
                            }
                            merges.push(item);
                        }
                    }
                    _ => {
                        return Err(YamlError {
                            line: kline,
                            col: 1,
                            message: "a merge key (<<) takes a mapping or a list of mappings"
                                .into(),
                        })
                    }
                },
                Some((k, kline)) => {
                    if let Some((_, first)) = entries.iter().find(|(e, _)| *e == k) {
                        // As compose does: a repeated key is an error, not a silent override.
                        return Err(YamlError {
                            line: kline,
                            col: 1,
                            message: format!(
                                "mapping key \"{k}\" already defined at line {}",
                                first.line
                            ),
                        });
                    }
                    let mut done = done;
                    done.key_line = kline;
                    entries.push((k, done));
                }
            },
        }
    }
}

/// YAML merge keys: the mapping's own keys win, then the merged mappings in
/// the order listed.
fn apply_merges(mut entries: Vec<(String, Node)>, merges: Vec<Node>) -> Vec<(String, Node)> {
    for m in merges {
        if let Value::Map(items) = m.value {
            for (k, v) in items {
                if !entries.iter().any(|(e, _)| *e == k) {
                    entries.push((k, v));
                }
            }
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(t: &str) -> Node {
        parse(t).unwrap().unwrap()
    }

    #[test]
    fn lines_scalars_and_nulls() {
        let n = doc("a: 1\nb:\n  - x\n  - 'null'\nc: ~\nd:\n");
        assert_eq!(n.get("a").unwrap().str(), Some("1"));
        assert_eq!(n.get("b").unwrap().line, 3);
        let Value::Seq(items) = &n.get("b").unwrap().value else {
            panic!()
        };
        assert_eq!(items[1].str(), Some("null"));
        assert_eq!(items[1].line, 4);
        assert!(n.get("c").unwrap().is_null());
        assert!(n.get("d").unwrap().is_null());
    }

    #[test]
    fn anchors_and_merge_lists_own_keys_win_then_first_listed() {
        let n = doc(
            "x-a: &a\n  image: from-a\n  restart: a\nx-b: &b\n  image: from-b\n  pull: b\ns:\n  <<: [*a, *b]\n  restart: own\n",
        );
        let s = n.get("s").unwrap();
        assert_eq!(s.get("image").unwrap().str(), Some("from-a"));
        assert_eq!(
            s.get("image").unwrap().line,
            2,
            "an alias keeps the anchor's line"
        );
        assert_eq!(s.get("restart").unwrap().str(), Some("own"));
        assert_eq!(s.get("pull").unwrap().str(), Some("b"));
        assert!(s.get("<<").is_none());
    }

    #[test]
    fn errors_carry_the_line() {
        let e = parse("services:\n  a:\n    image: x\n   bad: [\n").unwrap_err();
        assert!(e.line >= 4, "{e:?}");
        let e = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("already defined at line 1"), "{e:?}");
        let e = parse("a: *nope\n").unwrap_err();
        assert_eq!(e.line, 1);
    }

    #[test]
    fn compose_tags_become_flags() {
        let n = doc("a: !reset null\nb: !override [1]\nc: !!str 5\n");
        assert!(n.get("a").unwrap().reset);
        assert!(n.get("b").unwrap().replace);
        assert_eq!(n.get("c").unwrap().str(), Some("5"));
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("# only a comment\n").unwrap(), None);
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut t = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = i - 1;
            t.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(parse(&t).unwrap_err().message.contains("million"));
    }
}
