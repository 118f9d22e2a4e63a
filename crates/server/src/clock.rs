//! Times as people read them in status reasons, summaries and notices.

use time::OffsetDateTime;

/// `2026-11-23 12:04:10 UTC`
pub fn clock(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    t.format(&f).unwrap_or_default()
}
