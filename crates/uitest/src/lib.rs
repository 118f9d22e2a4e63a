//! Browser tests of tether's web UI live in `tests/browser.rs`; this library is empty.
//!
//! They drive Debian's headless Chromium through chromedriver (WebDriver, via fantoccini) against
//! a real control plane and a real runner agent started in-process, and follow the "Refresh runner
//! credentials" guide click by click. Run them with `cargo test -p tether-uitest` after installing
//! `chromium` and `chromium-driver` (`scripts/test` does that when they are missing).
