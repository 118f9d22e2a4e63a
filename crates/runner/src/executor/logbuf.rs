//! Turns a task's raw output into `log_chunk` strings: batched by size, never splitting a UTF-8
//! character across chunks (an incomplete trailing sequence waits for the next read), invalid
//! bytes replaced with U+FFFD.

/// Flush once this much output is pending (the timer flushes smaller batches).
pub(crate) const CHUNK_BYTES: usize = 16 * 1024;

#[derive(Debug, Default)]
pub(crate) struct LogBuffer {
    pending: Vec<u8>,
}

impl LogBuffer {
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    pub(crate) fn is_full(&self) -> bool {
        self.pending.len() >= CHUNK_BYTES
    }

    /// Everything that decodes now; an incomplete character at the end stays for the next chunk.
    pub(crate) fn take(&mut self) -> Option<String> {
        self.decode(false)
    }

    /// Everything, an incomplete trailing character included (as U+FFFD): the output has ended.
    pub(crate) fn finish(&mut self) -> Option<String> {
        self.decode(true)
    }

    fn decode(&mut self, at_end: bool) -> Option<String> {
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        while !rest.is_empty() {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(&String::from_utf8_lossy(valid));
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        None if at_end => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &[];
                        }
                        // The sequence may complete with the next read.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        let carried = rest.len();
        self.pending.drain(..self.pending.len() - carried);
        (!out.is_empty()).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_across_reads_is_carried_to_the_next_chunk() {
        let text = "aé€😀";
        let bytes = text.as_bytes();
        // Every split point, including ones inside the 2-, 3- and 4-byte characters.
        for cut in 0..=bytes.len() {
            let mut buf = LogBuffer::default();
            buf.push(&bytes[..cut]);
            let first = buf.take().unwrap_or_default();
            buf.push(&bytes[cut..]);
            let second = buf.take().unwrap_or_default();
            assert!(!first.contains(char::REPLACEMENT_CHARACTER), "cut {cut}");
            assert_eq!(format!("{first}{second}"), text, "cut {cut}");
            assert!(buf.finish().is_none(), "nothing left over at cut {cut}");
        }
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut buf = LogBuffer::default();
        buf.push(b"ok \xff\xfe done \xe2\x82");
        assert_eq!(buf.take().as_deref(), Some("ok \u{FFFD}\u{FFFD} done "));
        assert_eq!(
            buf.finish().as_deref(),
            Some("\u{FFFD}"),
            "an incomplete character at the very end is replaced"
        );
        assert!(buf.finish().is_none());
    }

    #[test]
    fn full_at_the_chunk_size() {
        let mut buf = LogBuffer::default();
        buf.push(&[b'x'; CHUNK_BYTES - 1]);
        assert!(!buf.is_full());
        buf.push(b"x");
        assert!(buf.is_full());
        assert_eq!(buf.take().map(|s| s.len()), Some(CHUNK_BYTES));
        assert!(!buf.is_full());
    }
}
