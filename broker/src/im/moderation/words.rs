//! The sensitive-word filter of a tenant: one Aho-Corasick automaton over the tenant's word
//! list (built once, rebuilt when the list changes), case-insensitive for ASCII, matching
//! every text-like field of a message's content. Masking replaces each character of a match
//! (overlapping matches included) with `*`, one `*` per character, never splitting UTF-8.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use serde::{Deserialize, Serialize};
use switchboard_proto::im::{self, content::Body};

use super::super::ImError;

/// Most words in a tenant's list.
pub const MAX_WORDS: usize = 10_000;
/// Longest word, bytes.
pub const MAX_WORD: usize = 64;

/// What happens to a message with a listed word.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Each character of the word becomes `*`; the message goes through.
    #[default]
    Replace,
    /// The message is refused with 451.
    Reject,
}

/// A tenant's word list as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WordList {
    pub words: Vec<String>,
    pub mode: Mode,
}

impl WordList {
    /// Trims, drops empty and duplicate words (case-insensitively for ASCII) and checks the
    /// bounds.
    pub fn normalise(mut self) -> Result<WordList, ImError> {
        let mut seen = std::collections::HashSet::new();
        self.words = self
            .words
            .into_iter()
            .map(|w| w.trim().to_owned())
            .filter(|w| !w.is_empty() && seen.insert(w.to_ascii_lowercase()))
            .collect();
        if self.words.len() > MAX_WORDS {
            return Err(ImError::TooLarge(format!("at most {MAX_WORDS} words")));
        }
        if let Some(w) = self.words.iter().find(|w| w.len() > MAX_WORD) {
            return Err(ImError::BadRequest(format!(
                "word longer than {MAX_WORD} bytes: {w:?}"
            )));
        }
        Ok(self)
    }
}

/// A built filter (cheap to clone: the automaton is shared).
#[derive(Debug, Clone)]
pub struct Filter {
    ac: AhoCorasick,
    pub mode: Mode,
}

impl Filter {
    /// Builds the automaton; `None` for an empty list.
    pub fn new(list: &WordList) -> Result<Option<Filter>, ImError> {
        if list.words.is_empty() {
            return Ok(None);
        }
        let ac = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&list.words)
            .map_err(|e| ImError::Internal(format!("word filter: {e}")))?;
        Ok(Some(Filter {
            ac,
            mode: list.mode,
        }))
    }

    /// Whether `text` contains a word.
    pub fn matches(&self, text: &str) -> bool {
        self.ac.is_match(text)
    }

    /// `text` with every character of every (possibly overlapping) match replaced by `*`;
    /// `None` if nothing matched.
    pub fn mask(&self, text: &str) -> Option<String> {
        let mut covered = vec![false; text.len()];
        let mut any = false;
        for m in self.ac.find_overlapping_iter(text) {
            any = true;
            for c in &mut covered[m.start()..m.end()] {
                *c = true;
            }
        }
        if !any {
            return None;
        }
        // Matches start and end on character boundaries (the words and the text are UTF-8),
        // so a character is masked when its first byte is covered.
        Some(
            text.char_indices()
                .map(|(i, c)| if covered[i] { '*' } else { c })
                .collect(),
        )
    }

    /// Applies the filter to a message's content: masks it in place (replace mode) or
    /// refuses it (reject mode).
    pub fn apply(&self, content: &mut im::Content) -> Result<(), ImError> {
        for field in text_fields(content) {
            match self.mode {
                Mode::Reject if self.matches(field) => {
                    return Err(ImError::Sensitive(
                        "the message contains a word this app does not allow".into(),
                    ));
                }
                Mode::Reject => {}
                Mode::Replace => {
                    if let Some(masked) = self.mask(field) {
                        *field = masked;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The text-like fields of a content: what people read.
fn text_fields(content: &mut im::Content) -> Vec<&mut String> {
    match content.body.as_mut() {
        Some(Body::Text(t)) => vec![&mut t.text],
        Some(Body::Rich(r)) => vec![&mut r.title, &mut r.text],
        Some(Body::Location(l)) => vec![&mut l.title, &mut l.address],
        Some(Body::Image(m) | Body::Voice(m) | Body::Video(m) | Body::File(m)) => {
            vec![&mut m.name]
        }
        Some(Body::Notice(n)) => vec![&mut n.text],
        Some(Body::Emoji(_) | Body::Custom(_) | Body::CallLog(_)) | None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(words: &[&str], mode: Mode) -> Filter {
        let list = WordList {
            words: words.iter().map(|w| (*w).to_owned()).collect(),
            mode,
        }
        .normalise()
        .expect("valid list");
        Filter::new(&list).expect("builds").expect("not empty")
    }

    #[test]
    fn masks_ascii_case_insensitively_one_star_per_character() {
        let f = filter(&["bad", "worse"], Mode::Replace);
        assert_eq!(
            f.mask("a BAD, Worse day").as_deref(),
            Some("a ***, ***** day")
        );
        assert_eq!(f.mask("fine"), None);
    }

    #[test]
    fn masks_multibyte_words_and_overlaps_without_breaking_utf8() {
        let f = filter(&["敏感", "感词", "abc", "bcd"], Mode::Replace);
        assert_eq!(f.mask("这是敏感词吗").as_deref(), Some("这是***吗"));
        assert_eq!(f.mask("xabcdx").as_deref(), Some("x****x"));
        assert_eq!(f.mask("é敏感é").as_deref(), Some("é**é"));
    }

    #[test]
    fn reject_mode_refuses_any_text_field() {
        let f = filter(&["spam"], Mode::Reject);
        let mut c = im::Content {
            body: Some(Body::Rich(im::Rich {
                title: "hello".into(),
                text: "buy SPAM now".into(),
                ..im::Rich::default()
            })),
        };
        assert!(matches!(f.apply(&mut c), Err(ImError::Sensitive(_))));
        let mut ok = im::Content {
            body: Some(Body::Text(im::Text { text: "hi".into() })),
        };
        assert!(f.apply(&mut ok).is_ok());
    }

    #[test]
    fn lists_are_bounded_and_deduplicated() {
        let list = WordList {
            words: vec![" a ".into(), "A".into(), "".into(), "b".into()],
            mode: Mode::Reject,
        }
        .normalise()
        .expect("valid");
        assert_eq!(list.words, ["a", "b"]);
        let long = WordList {
            words: vec!["x".repeat(MAX_WORD + 1)],
            mode: Mode::Replace,
        };
        assert!(long.normalise().is_err());
    }
}
