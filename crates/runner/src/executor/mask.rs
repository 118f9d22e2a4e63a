//! Masks a task's secret environment values in its log before the log leaves the runner: each
//! occurrence becomes `***`. Output arrives in chunks, so a secret may be split between two: the
//! end of a chunk that could be the start of a secret is held back until the next chunk (or the
//! end of the output) shows whether it is one. What is released never contains a secret whole,
//! and never the first part of one whose rest follows.

/// What a secret is replaced with.
pub(crate) const MASK: &str = "***";

#[derive(Debug, Default)]
pub(crate) struct Masker {
    /// Longest first, so that a secret containing another is masked whole.
    secrets: Vec<String>,
    held: String,
}

impl Masker {
    pub(crate) fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self {
            secrets,
            held: String::new(),
        }
    }

    /// `chunk` masked, minus a tail that may be the start of a secret (kept for the next call);
    /// with `at_end`, everything. `None` when nothing is to be sent.
    pub(crate) fn mask(&mut self, chunk: Option<String>, at_end: bool) -> Option<String> {
        if self.secrets.is_empty() {
            return chunk;
        }
        let mut text = std::mem::take(&mut self.held);
        text.push_str(chunk.as_deref().unwrap_or(""));
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), MASK);
            }
        }
        if !at_end {
            let keep = self.partial_tail(&text);
            self.held = text.split_off(text.len() - keep);
        }
        (!text.is_empty()).then_some(text)
    }

    /// Bytes at the end of `text` that are a proper prefix of some secret (the longest such).
    fn partial_tail(&self, text: &str) -> usize {
        let longest = self.secrets.first().map_or(0, String::len);
        let mut best = 0;
        for (start, _) in text.char_indices().rev() {
            let tail = &text[start..];
            if tail.len() >= longest {
                break;
            }
            if self
                .secrets
                .iter()
                .any(|s| s.len() > tail.len() && s.starts_with(tail))
            {
                best = tail.len();
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(masker: &mut Masker, chunks: &[&str]) -> String {
        let mut out = String::new();
        for c in chunks {
            out.push_str(
                &masker
                    .mask(Some((*c).to_owned()), false)
                    .unwrap_or_default(),
            );
        }
        out.push_str(&masker.mask(None, true).unwrap_or_default());
        out
    }

    #[test]
    fn a_secret_is_masked_wherever_the_chunks_split_it() {
        let secret = "hunter2-secret";
        let line = format!("token={secret}; again {secret}!\n");
        // Every split point of the line into two chunks, and into one-byte chunks.
        for cut in 0..=line.len() {
            let mut m = Masker::new([secret.to_owned()]);
            let out = run(&mut m, &[&line[..cut], &line[cut..]]);
            assert_eq!(out, "token=***; again ***!\n", "cut at {cut}");
        }
        let bytes: Vec<String> = line.chars().map(String::from).collect();
        let refs: Vec<&str> = bytes.iter().map(String::as_str).collect();
        let mut m = Masker::new([secret.to_owned()]);
        assert_eq!(run(&mut m, &refs), "token=***; again ***!\n");
    }

    #[test]
    fn a_tail_that_only_looks_like_a_secret_is_released_at_the_end() {
        let mut m = Masker::new(["secret".to_owned()]);
        assert_eq!(
            m.mask(Some("the sec".into()), false).as_deref(),
            Some("the ")
        );
        assert_eq!(m.mask(None, true).as_deref(), Some("sec"));
    }

    #[test]
    fn without_secrets_chunks_pass_through() {
        let mut m = Masker::new(Vec::new());
        assert_eq!(m.mask(Some("abc".into()), false).as_deref(), Some("abc"));
    }

    #[test]
    fn the_longer_of_two_overlapping_secrets_is_masked_whole() {
        let mut m = Masker::new(["abc".to_owned(), "abcdef".to_owned()]);
        assert_eq!(run(&mut m, &["x abcdef y abc z"]), "x *** y *** z");
    }
}
