//! The web UI in a real browser: Debian's headless Chromium, driven over WebDriver (chromedriver,
//! via fantoccini), against a real control plane and a real runner agent started in-process.
//!
//! The tests navigate only by what a person sees (link, button, tab and field labels, the `...`
//! menu), following the "Refresh runner credentials" guide step by step, and check the outcome
//! outside the browser (the revealed secret gets a token at `/oauth/token`, the old one does not).
//! The contract they are written against is docs/UI.md.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian packages `chromium` and
//! `chromium-driver`; `scripts/test` installs them when missing). One chromedriver is shared by the
//! tests running at the same time; each test has its own browser session and profile directory.
//!
//! The refresh flow also writes the screenshots shown in README.md to docs/images/.

use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use serde_json::{json, Value};
use tether_domain::Password;
use tether_testkit::{spawn_app_with, TestApp};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROME_FLAGS: [&str; 10] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
];

/// Every wait in these tests gives up after this long.
const WAIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(100);

const ADMIN_USER: &str = "admin";
const ADMIN_PASSWORD: &str = "admin password for the browser tests";
const RUNNER: &str = "my-runner";
const PLATFORM: &str = "aws_fargate";

/// The left navigation.
const NAV: &str = "//nav[@aria-label='Main']";
/// The first sentence of the refresh confirmation (docs/UI.md).
const WHAT_REFRESH_DOES: &str =
    "This will revoke the existing credentials and disconnect the running runner.";

// ---------------------------------------------------------------------------------------------
// chromedriver (one per test binary, shared) and browser sessions (one per test)
// ---------------------------------------------------------------------------------------------

/// A chromedriver process on a free loopback port; killed when the last test using it drops it.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static DRIVER: Mutex<Weak<Driver>> = Mutex::new(Weak::new());

/// The shared chromedriver, started on first use (and again if every earlier user dropped it).
fn driver() -> Arc<Driver> {
    let mut slot = DRIVER.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(d) = slot.upgrade() {
        return d;
    }
    for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: the browser tests need Debian's `{package}` package \
             (scripts/test installs it; by hand, as root: \
             apt-get update && apt-get install -y chromium chromium-driver)"
        );
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port for chromedriver")
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{CHROMEDRIVER} could not be started: {e}"));
    let d = Arc::new(Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    });
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen on {addr} within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    *slot = Arc::downgrade(&d);
    d
}

/// One Chromium session with its own profile directory.
struct Browser {
    client: Client,
    _profile: tempfile::TempDir,
    _driver: Arc<Driver>,
}

impl Browser {
    async fn open() -> Self {
        let driver = driver();
        let profile = tempfile::tempdir().expect("profile dir");
        let mut args: Vec<String> = CHROME_FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": CHROMIUM, "args": args}),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| panic!("no Chromium session from chromedriver: {e}"));
        Self {
            client,
            _profile: profile,
            _driver: driver,
        }
    }

    async fn close(self) {
        if let Err(e) = self.client.close().await {
            eprintln!("closing the browser session failed: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The control plane and a connected runner
// ---------------------------------------------------------------------------------------------

struct Env {
    app: TestApp,
    client_id: String,
    secret: String,
    /// The file the runner reads its secret from (it watches it: hot reload).
    secret_file: PathBuf,
    stop: watch::Sender<bool>,
    agent: JoinHandle<()>,
    _work: tempfile::TempDir,
}

impl Env {
    /// A control plane (heartbeat 1 s, admin password known) with the runner `my-runner`
    /// (platform AWS) created and its agent connected (status `running`).
    async fn start() -> Self {
        let app = spawn_app_with(|c| {
            c.heartbeat = Duration::from_secs(1);
            c.admin_password = Some(Password::parse(ADMIN_PASSWORD).expect("admin password"));
        })
        .await;
        let created = app.create_runner(RUNNER, PLATFORM).await;
        let client_id = created["credentials"]["client_id"]
            .as_str()
            .expect("client_id in the create response")
            .to_owned();
        let secret = created["credentials"]["client_secret"]
            .as_str()
            .expect("client_secret in the create response")
            .to_owned();
        let work = tempfile::tempdir().expect("runner work dir");
        let secret_file = work.path().join("client_secret");
        std::fs::write(&secret_file, &secret).expect("secret file written");
        let config = tether_runner::RunnerArgs {
            url: Some(app.base_url.clone()),
            client_id: Some(client_id.clone()),
            client_secret: None,
            client_secret_file: Some(secret_file.clone()),
            client_secret_arn: None,
            ca_file: None,
            max_tasks: 4,
            workdir: work.path().join("work"),
            platform: PLATFORM.into(),
            metrics_listen: None,
            secret_refresh_seconds: None,
        }
        .validate()
        .expect("runner config");
        let (stop, stop_rx) = watch::channel(false);
        let agent = tokio::spawn(async move {
            if let Err(e) = tether_runner::run_until(config, stop_rx).await {
                eprintln!("runner agent stopped with an error: {e:#}");
            }
        });
        let env = Self {
            app,
            client_id,
            secret,
            secret_file,
            stop,
            agent,
            _work: work,
        };
        let what = format!("runner {RUNNER} to report status `running` over the API");
        wait_until(&what, || async {
            (env.api_status().await == "running").then_some(())
        })
        .await;
        env
    }

    async fn api_status(&self) -> String {
        let r = self
            .app
            .get(
                &format!("/api/v1/runners/{RUNNER}"),
                Some(&self.app.admin_token),
            )
            .await;
        r.json()["status"].as_str().unwrap_or_default().to_owned()
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(WAIT, self.agent).await.is_err() {
            eprintln!("the runner agent did not stop within {WAIT:?}");
        }
        self.app.shutdown().await;
    }
}

/// Runs `steps` with a fresh control plane and browser, then closes the browser and stops the
/// control plane whether the steps passed or panicked (the panic is re-raised afterwards, after a
/// screenshot and the HTML of the page at that moment are saved for the failure report).
async fn scenario<F, Fut>(name: &str, steps: F)
where
    F: FnOnce(Arc<Env>, Client) -> Fut,
    Fut: Future<Output = ()>,
{
    let env = Arc::new(Env::start().await);
    let browser = Browser::open().await;
    let outcome = AssertUnwindSafe(steps(env.clone(), browser.client.clone()))
        .catch_unwind()
        .await;
    if outcome.is_err() {
        save_failure_evidence(&browser.client, name).await;
    }
    browser.close().await;
    match Arc::try_unwrap(env) {
        Ok(env) => env.stop().await,
        Err(_) => eprintln!("the test environment is still shared; not stopped"),
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Saves what the browser showed when a test failed, into the system temp directory.
async fn save_failure_evidence(c: &Client, name: &str) {
    let dir = std::env::temp_dir();
    let url = c
        .current_url()
        .await
        .map(|u| u.to_string())
        .unwrap_or_default();
    let png = dir.join(format!("tether-uitest-{name}.png"));
    let html = dir.join(format!("tether-uitest-{name}.html"));
    if let Ok(bytes) = c.screenshot().await {
        let _ = std::fs::write(&png, bytes);
    }
    if let Ok(source) = c.source().await {
        let _ = std::fs::write(&html, source);
    }
    eprintln!(
        "{name} failed on {url}; the page is saved as {} and {}",
        png.display(),
        html.display()
    );
}

// ---------------------------------------------------------------------------------------------
// Waiting and finding things by their visible labels
// ---------------------------------------------------------------------------------------------

/// Polls `probe` until it yields a value; panics after [`WAIT`] saying what was expected.
async fn wait_until<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The first displayed element matching `xpath`, if any.
async fn displayed(c: &Client, xpath: &str) -> Option<Element> {
    for e in c.find_all(Locator::XPath(xpath)).await.ok()? {
        if e.is_displayed().await.unwrap_or(false) {
            return Some(e);
        }
    }
    None
}

/// Waits until an element matching `xpath` is displayed.
async fn see(c: &Client, xpath: &str, what: &str) -> Element {
    let mut last_url = String::new();
    let found = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(e) = displayed(c, xpath).await {
                return e;
            }
            if let Ok(u) = c.current_url().await {
                last_url = u.to_string();
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
    match found {
        Ok(e) => e,
        Err(_) => {
            panic!("timed out after {WAIT:?} waiting to see {what} (XPath {xpath}) on {last_url}")
        }
    }
}

/// Why a person could not click `e` where it is now (outside the window, clipped by a scrolling
/// box, covered by something else), or `None` if they can. WebDriver itself would scroll any box
/// to reach the element first, which a person following the guide does not do.
const UNREACHABLE_JS: &str = r##"
const e = arguments[0];
const r = e.getBoundingClientRect();
if (r.width < 1 || r.height < 1) return "has no size";
const x = r.left + r.width / 2, y = r.top + r.height / 2;
if (x < 0 || y < 0 || x >= window.innerWidth || y >= window.innerHeight)
  return "is outside the window";
const hit = document.elementFromPoint(x, y);
if (hit === e || e.contains(hit)) return null;
const name = (n) => n ? n.tagName.toLowerCase() + (n.id ? "#" + n.id : "")
  + (n.className && typeof n.className === "string" ? "." + n.className.trim().split(/\s+/).join(".") : "")
  : "nothing";
let clip = e.parentElement;
while (clip && clip !== document.body) {
  const st = getComputedStyle(clip);
  if (/(auto|scroll|hidden|clip)/.test(st.overflowX + st.overflowY)) {
    const b = clip.getBoundingClientRect();
    if (y < b.top || y > b.bottom || x < b.left || x > b.right)
      return "is cut off by the scrolling box " + name(clip) + " (overflow " + st.overflowX + "/"
        + st.overflowY + "); only a scroll inside that box would show it";
  }
  clip = clip.parentElement;
}
return "is covered by " + name(hit);
"##;

async fn unreachable(c: &Client, e: &Element) -> Option<String> {
    let arg = serde_json::to_value(e).expect("element reference");
    match c.execute(UNREACHABLE_JS, vec![arg]).await {
        Ok(Value::String(why)) => Some(why),
        Ok(_) => None,
        Err(err) => Some(format!("could not be checked: {err}")),
    }
}

/// Waits for the element to be displayed where a person can click it, then clicks it.
async fn click(c: &Client, xpath: &str, what: &str) {
    let e = see(c, xpath, what).await;
    let deadline = Instant::now() + WAIT;
    while let Some(why) = unreachable(c, &e).await {
        assert!(
            Instant::now() < deadline,
            "{what} is on the page but a person cannot click it: it {why} (waited {WAIT:?}; \
             XPath {xpath})"
        );
        tokio::time::sleep(POLL).await;
    }
    e.click()
        .await
        .unwrap_or_else(|err| panic!("clicking {what} (XPath {xpath}) failed: {err}"));
}

/// Whether any displayed element matches `xpath` right now.
async fn shown(c: &Client, xpath: &str) -> bool {
    displayed(c, xpath).await.is_some()
}

/// A `<button>` (or submit input) whose visible label is exactly `label`.
fn button(label: &str) -> String {
    format!(
        "//button[normalize-space()='{label}'] \
         | //input[(@type='submit' or @type='button') and @value='{label}']"
    )
}

/// Anything a person would click as a control labelled `label`: a button or a link.
fn control(label: &str) -> String {
    format!("{} | //a[normalize-space()='{label}']", button(label))
}

/// The text input of the `<label>` reading `label` (by `for`, or nested in the label).
fn field(label: &str) -> String {
    format!(
        "//input[@id=//label[normalize-space()='{label}']/@for] \
         | //label[normalize-space()='{label}']//input"
    )
}

/// A tab (`role="tab"`) labelled `label`.
fn tab(label: &str) -> String {
    format!("//*[@role='tab'][normalize-space()='{label}']")
}

/// The row of the Runners list whose Runner column links `runner`.
fn row(runner: &str) -> String {
    format!("//tr[.//a[normalize-space()='{runner}']]")
}

/// The row's **...** actions menu (its `<summary>`).
fn dots(runner: &str) -> String {
    format!(
        "{}//summary[@aria-label='Actions for {runner}'][normalize-space()='...']",
        row(runner)
    )
}

/// The row's actions menu once open.
fn menu(runner: &str) -> String {
    format!("{}/parent::details[@open]", dots(runner))
}

/// A heading that starts with `text`.
fn heading(text: &str) -> String {
    format!(
        "//*[self::h1 or self::h2 or self::h3 or self::h4][starts-with(normalize-space(), '{text}')]"
    )
}

fn status_cell(runner: &str) -> String {
    format!("//tr[@data-runner='{runner}']//*[@data-field='status']")
}

async fn text_of(e: &Element) -> String {
    e.text().await.unwrap_or_default().trim().to_owned()
}

/// Saves a PNG of the viewport to docs/images/`name`.
async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot taken");
    assert!(
        png.starts_with(b"\x89PNG"),
        "the screenshot {name} is not a PNG"
    );
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/images");
    std::fs::create_dir_all(&dir).expect("docs/images exists");
    let path = dir.join(name);
    std::fs::write(&path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Opens the site, which sends a visitor without a session to the login page, and logs in with
/// the **Username** and **Password** fields and the **Log in** button.
async fn log_in(c: &Client, app: &TestApp, username: &str, password: &str) {
    c.goto(&app.url("/")).await.expect("the site opens");
    see(c, &field("Username"), "the Username field")
        .await
        .send_keys(username)
        .await
        .expect("typing the username");
    see(c, &field("Password"), "the Password field")
        .await
        .send_keys(password)
        .await
        .expect("typing the password");
    click(c, &button("Log in"), "the Log in button").await;
    see(c, &button("Log out"), "the Log out button after logging in").await;
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

/// The guide's steps 1–6, word for word, then the outcome checked outside the browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_refresh_flow_works_word_for_word() {
    scenario(
        "the_guides_refresh_flow_works_word_for_word",
        |env, c| async move {
            let c = &c;
            log_in(c, &env.app, ADMIN_USER, ADMIN_PASSWORD).await;

            // 1. In the left navigation, click Runners & Instances. Then, select Runners from the menu.
            let nav_item = format!("{NAV}//summary[normalize-space()='Runners & Instances']");
            let menu_open = format!("{nav_item}/parent::details[@open]");
            if !shown(c, &menu_open).await {
                click(c, &nav_item, "Runners & Instances in the left navigation").await;
            }
            see(c, &menu_open, "the Runners & Instances menu, open").await;
            click(
                c,
                &format!("{menu_open}//a[normalize-space()='Runners']"),
                "Runners in the Runners & Instances menu",
            )
            .await;
            let row = row(RUNNER);
            see(c, &row, "the runner's row in the Runners list").await;
            let cell = see(c, &status_cell(RUNNER), "the runner's status cell").await;
            wait_until("the runner's status cell to say `running`", || async {
                (text_of(&cell).await == "running").then_some(())
            })
            .await;

            // 2. Locate your runner, and click the three dots ..., then click Runner details.
            click(c, &dots(RUNNER), "the ... menu of the runner's row").await;
            let details = format!("{}//a[normalize-space()='Runner details']", menu(RUNNER));
            see(c, &details, "Runner details in the ... menu").await;
            screenshot(c, "runners-list.png").await;
            click(c, &details, "Runner details in the ... menu").await;

            // 3. Click the Credentials tab.
            click(c, &tab("Credentials"), "the Credentials tab").await;
            see(
                c,
                &format!("{}[@aria-selected='true']", tab("Credentials")),
                "the Credentials tab, selected",
            )
            .await;
            let shown_id = text_of(&see(c, "//*[@id='client-id']", "the client ID").await).await;
            assert_eq!(
                shown_id, env.client_id,
                "the Credentials tab shows the runner's client ID"
            );

            // 4. Click Refresh.
            click(c, &control("Refresh"), "the Refresh button").await;

            // 5. When asked for confirmation, type the word `refresh` and click Refresh credentials.
            see(
                c,
                &format!("//*[contains(normalize-space(), '{WHAT_REFRESH_DOES}')]"),
                "the confirmation stating what will happen",
            )
            .await;
            let confirm = see(
                c,
                &field("Type refresh to confirm"),
                "the field Type refresh to confirm",
            )
            .await;
            let submit = see(
                c,
                &button("Refresh credentials"),
                "the Refresh credentials button",
            )
            .await;
            assert!(
                !submit.is_enabled().await.expect("button state"),
                "Refresh credentials must be disabled before `refresh` is typed"
            );
            confirm
                .send_keys("refresh")
                .await
                .expect("typing `refresh`");
            wait_until(
                "Refresh credentials to become enabled after typing `refresh`",
                || async { submit.is_enabled().await.ok().filter(|e| *e).map(|_| ()) },
            )
            .await;
            screenshot(c, "refresh-dialog.png").await;
            submit.click().await.expect("clicking Refresh credentials");

            // 6. When you receive a notification that the credentials are refreshed, you can click
            //    Reveal to show the new secret that has been generated.
            see(
                c,
                "//*[@role='status'][contains(normalize-space(), 'Credentials refreshed.')]",
                "the notification Credentials refreshed.",
            )
            .await;
            see(
                c,
                &heading("Apply the new credentials"),
                "the section Apply the new credentials",
            )
            .await;
            click(c, &button("Reveal"), "the Reveal button").await;
            let secret =
                text_of(&see(c, "//code[@id='revealed-secret']", "the revealed secret").await)
                    .await;
            assert!(!secret.is_empty(), "the revealed secret is empty");
            assert_ne!(secret, env.secret, "the revealed secret is the old one");
            see(c, &button("Copy"), "the Copy button next to the secret").await;
            see(
                c,
                "//*[starts-with(normalize-space(), 'You can reveal it again until')]",
                "how long the secret can be revealed again",
            )
            .await;
            screenshot(c, "revealed-secret.png").await;

            // The new secret works and the old one is refused.
            let new = env.app.token_basic(&env.client_id, &secret).await;
            assert_eq!(
                new.status, 200,
                "the revealed secret gets a token: {}",
                new.body
            );
            assert!(
                new.json()["access_token"].is_string(),
                "no access_token: {}",
                new.body
            );
            let old = env.app.token_basic(&env.client_id, &env.secret).await;
            assert_eq!(
                old.status, 401,
                "the old secret must be refused: {}",
                old.body
            );
        },
    )
    .await;
}

/// The status on the Runners list follows the runner without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_changes_on_screen_without_a_reload() {
    scenario(
        "status_changes_on_screen_without_a_reload",
        |env, c| async move {
            let c = &c;
            log_in(c, &env.app, ADMIN_USER, ADMIN_PASSWORD).await;
            c.goto(&env.app.url("/runners"))
                .await
                .expect("the Runners list opens");
            let cell = see(c, &status_cell(RUNNER), "the runner's status cell").await;
            wait_until("the runner's status cell to say `running`", || async {
                (text_of(&cell).await == "running").then_some(())
            })
            .await;
            c.execute("window.__marker = 1;", vec![])
                .await
                .expect("marker set");

            let r = env
                .app
                .post(
                    &format!("/api/v1/runners/{RUNNER}/credentials/refresh"),
                    Some(&env.app.admin_token),
                    &json!({"confirm": "refresh"}),
                )
                .await;
            assert_eq!(r.status, 200, "refresh over the API: {}", r.body);

            let seen = wait_until(
                "the runner's status cell to change to `unknown` without a reload",
                || async {
                    // Found anew each time: a reload would replace the cell, and the marker check below
                    // says so clearly.
                    let e = displayed(c, &status_cell(RUNNER)).await?;
                    let t = text_of(&e).await;
                    (t == "unknown").then_some(e)
                },
            )
            .await;
            let marker: Value = c
                .execute("return window.__marker === 1;", vec![])
                .await
                .expect("marker read");
            assert_eq!(
                marker,
                json!(true),
                "the page reloaded: window.__marker is gone"
            );
            let reason = seen
                .attr("title")
                .await
                .expect("title read")
                .unwrap_or_default();
            assert!(
            reason.contains("credentials refreshed"),
            "the status cell's title should give the reason (credentials refreshed), got {reason:?}"
        );
        },
    )
    .await;
}

/// A viewer can look at the Credentials tab but gets no Refresh (and no Pause runner).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_no_refresh_button() {
    scenario("a_viewer_sees_no_refresh_button", |env, c| async move {
        let c = &c;
        let (viewer, password) = ("vera", "viewer password for the browser tests");
        let r = env
            .app
            .post(
                "/api/v1/users",
                Some(&env.app.admin_token),
                &json!({"username": viewer, "password": password, "role": "viewer"}),
            )
            .await;
        assert_eq!(r.status, 201, "creating the viewer: {}", r.body);
        log_in(c, &env.app, viewer, password).await;

        c.goto(&env.app.url("/runners"))
            .await
            .expect("the Runners list opens");
        click(c, &dots(RUNNER), "the ... menu of the runner's row").await;
        let menu = menu(RUNNER);
        see(
            c,
            &format!("{menu}//a[normalize-space()='Runner details']"),
            "Runner details in the ... menu",
        )
        .await;
        for label in ["Pause runner", "Resume runner", "Restart runner"] {
            assert!(
                !shown(c, &format!("{menu}//*[normalize-space()='{label}']")).await,
                "a viewer must not see {label} in the ... menu"
            );
        }
        assert!(
            !shown(c, &control("Create runner")).await,
            "a viewer must not see Create runner"
        );

        click(
            c,
            &format!("{menu}//a[normalize-space()='Runner details']"),
            "Runner details in the ... menu",
        )
        .await;
        click(c, &tab("Credentials"), "the Credentials tab").await;
        see(
            c,
            "//*[@id='client-id']",
            "the client ID on the Credentials tab",
        )
        .await;
        for label in ["Refresh", "Reveal", "Refresh credentials"] {
            assert!(
                c.find_all(Locator::XPath(&control(label)))
                    .await
                    .expect("find")
                    .is_empty(),
                "a viewer must not get a {label} control on the Credentials tab"
            );
        }
    })
    .await;
}

/// A zero-downtime rotation in the browser: the dialog says what overlap really does (nothing is
/// disconnected), the Apply section follows the runner (steps while the old secret is still in
/// use, then "Applied: …" once the previous one is revoked), revoking the previous secret and
/// restarting the runner both ask first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlap_rotation_says_what_it_does_and_the_apply_section_follows_the_runner() {
    scenario(
        "an_overlap_rotation_says_what_it_does_and_the_apply_section_follows_the_runner",
        |env, c| async move {
            let c = &c;
            log_in(c, &env.app, ADMIN_USER, ADMIN_PASSWORD).await;
            let url = env.app.url(&format!("/runners/{RUNNER}/credentials"));
            c.goto(&url).await.expect("open the Credentials tab");
            click(c, &control("Refresh"), "the Refresh button").await;
            let revoke_text = format!("//p[contains(normalize-space(), '{WHAT_REFRESH_DOES}')]");
            let overlap_text =
                "//p[starts-with(normalize-space(), 'With zero-downtime rotation nothing is disconnected')]";
            see(c, &revoke_text, "what a revoking refresh does").await;
            assert!(!shown(c, overlap_text).await, "the overlap text shows before it is chosen");
            click(
                c,
                "//label[starts-with(normalize-space(), 'Zero-downtime rotation')]",
                "the Zero-downtime rotation option",
            )
            .await;
            see(c, overlap_text, "what a zero-downtime rotation does").await;
            assert!(
                !shown(c, &revoke_text).await,
                "with overlap ticked the dialog must not say it disconnects the runner"
            );
            let confirm = see(c, &field("Type refresh to confirm"), "the confirmation field").await;
            confirm.send_keys("refresh").await.expect("typing `refresh`");
            let submit = see(c, &button("Refresh credentials"), "the Refresh credentials button").await;
            wait_until("Refresh credentials to become enabled", || async {
                submit.is_enabled().await.ok().filter(|e| *e).map(|_| ())
            })
            .await;
            submit.click().await.expect("clicking Refresh credentials");
            see(
                c,
                "//*[@role='status'][contains(normalize-space(), 'Credentials refreshed.')]",
                "the notification Credentials refreshed.",
            )
            .await;
            // The runner is still connected on the old secret: the steps show, with the truth.
            let until = text_of(&see(c, "//*[@id='apply-until']", "what holds until it is applied").await).await;
            assert!(
                until.starts_with("Until this is done, instances keep using the previous secret until"),
                "{until}"
            );
            assert!(!until.contains("unknown"), "the runner is running: {until}");
            let reload = text_of(&see(c, "//*[@id='apply-reload']", "how the instance reloads").await).await;
            assert!(reload.contains("reload the secret by themselves"), "{reload}");
            see(
                c,
                "//*[@id='instance-reload']//li[contains(normalize-space(), 'reloads by itself')]",
                "the instance's reload on the Credentials tab",
            )
            .await;
            assert_eq!(env.api_status().await, "running", "nothing was disconnected");

            // Apply it as the runner's store would: the runner reloads and moves by itself.
            click(c, &button("Reveal"), "the Reveal button").await;
            let secret = text_of(&see(c, "//code[@id='revealed-secret']", "the revealed secret").await).await;
            std::fs::write(&env.secret_file, &secret).expect("writing the secret file");
            wait_until("the instance to move to generation 2", || async {
                let r = env.app.get(&format!("/api/v1/runners/{RUNNER}"), Some(&env.app.admin_token)).await;
                (r.json()["credential_rollout"]["instances_on_newest"] == 1).then_some(())
            })
            .await;

            // Revoking the previous secret asks first.
            c.goto(&url).await.expect("back to the Credentials tab");
            click(c, &control("Revoke the previous secret now"), "Revoke the previous secret now").await;
            see(
                c,
                "//*[@id='revoke-what'][contains(normalize-space(), 'Generation 1')]",
                "what revoking the previous secret does",
            )
            .await;
            click(c, &button("Revoke the previous secret"), "the confirming button").await;
            see(
                c,
                "//*[@role='status'][starts-with(normalize-space(), 'Revoked generation 1')]",
                "what was revoked",
            )
            .await;
            let applied = text_of(&see(c, "//*[@id='apply-applied']", "the Applied state").await).await;
            assert!(
                applied.starts_with("Applied: 1 instance on generation 2 since"),
                "{applied}"
            );
            assert!(!shown(c, "//*[@id='apply-until']").await, "no steps once applied");
            assert_eq!(env.api_status().await, "running");

            // Restart runner asks first, and Cancel changes nothing.
            click(c, &tab("Details"), "the Details tab").await;
            click(c, &button("Restart runner"), "Restart runner").await;
            see(
                c,
                "//*[@id='restart-what'][contains(normalize-space(), 'finishes what it is running and exits')]",
                "what a restart does",
            )
            .await;
            click(c, "//a[normalize-space()='Cancel']", "Cancel").await;
            see(c, &tab("Details"), "the runner page again").await;
            assert_eq!(env.api_status().await, "running", "Cancel restarted nothing");
        },
    )
    .await;
}

/// The `tether` binary next to this test's executable (built with the workspace).
fn tether_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("tether"))
        .expect("target directory");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace (cargo build --workspace) before these tests",
        bin.display()
    );
    bin
}

/// What a new user tries first: `tether server --dev`, then the guide on its `local` runner —
/// refresh, Unknown, Reveal, apply as the Apply section says, Running again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guide_works_on_the_dev_servers_local_runner() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let token = "dev-bootstrap-token-for-the-browser-test-0123";
    let mut server = Command::new(tether_binary())
        .args(["server", "--dev"])
        .env("TETHER_LISTEN", format!("127.0.0.1:{port}"))
        .env("TETHER_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("TETHER_BOOTSTRAP_TOKEN", token)
        .env("TETHER_HEARTBEAT_SECONDS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tether server --dev starts");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let local = |http: reqwest::Client, base: String| async move {
        let r = http
            .get(format!("{base}/api/v1/runners/local"))
            .bearer_auth(token)
            .send()
            .await
            .ok()?;
        r.json::<Value>().await.ok()
    };
    wait_until("the dev server's local runner to be running", || async {
        local(http.clone(), base.clone())
            .await
            .filter(|v| v["status"] == "running")
            .map(|_| ())
    })
    .await;
    let browser = Browser::open().await;
    let c = &browser.client;
    let outcome = AssertUnwindSafe(async {
        c.goto(&format!("{base}/login")).await.expect("login page");
        see(c, &field("Username"), "the Username field").await.send_keys(ADMIN_USER).await.expect("type");
        see(c, &field("Password"), "the Password field").await.send_keys(ADMIN_PASSWORD).await.expect("type");
        click(c, &button("Log in"), "Log in").await;
        see(c, &row("local"), "the local runner's row").await;
        click(c, &dots("local"), "the ... menu of local").await;
        click(c, &format!("{}//a[normalize-space()='Runner details']", menu("local")), "Runner details").await;
        click(c, &tab("Credentials"), "the Credentials tab").await;
        click(c, &control("Refresh"), "the Refresh button").await;
        see(c, &field("Type refresh to confirm"), "the confirmation field").await.send_keys("refresh").await.expect("type");
        let submit = see(c, &button("Refresh credentials"), "Refresh credentials").await;
        wait_until("Refresh credentials to become enabled", || async {
            submit.is_enabled().await.ok().filter(|e| *e).map(|_| ())
        })
        .await;
        submit.click().await.expect("click Refresh credentials");
        see(c, "//*[@role='status'][contains(normalize-space(), 'Credentials refreshed.')]", "the notification").await;
        wait_until("local to show unknown", || async {
            displayed(c, "//*[@id='runner-status'][@data-status='unknown']").await.map(|_| ())
        })
        .await;
        // The Apply section says exactly where the dev runner reads its secret.
        let step = see(c, "//section[@id='apply']//pre/code[starts-with(normalize-space(), \"printf '%s' '<client_secret>' >\")]", "the printf line").await;
        let command = text_of(&step).await;
        assert!(command.contains("/local-runner/client_secret"), "{command}");
        click(c, &button("Reveal"), "the Reveal button").await;
        let secret = text_of(&see(c, "//code[@id='revealed-secret']", "the revealed secret").await).await;
        // Do what the Apply section says, with the revealed secret in place of <client_secret>.
        let status = Command::new("sh")
            .arg("-c")
            .arg(command.replace("<client_secret>", &secret))
            .status()
            .expect("sh runs");
        assert!(status.success(), "the Apply section's command failed");
        // The status turns Running on screen by itself...
        wait_until("local to show running again", || async {
            displayed(c, "//*[@id='runner-status'][@data-status='running']").await.map(|_| ())
        })
        .await;
        // ...and the Credentials tab, opened again, says the secret is applied.
        c.goto(&format!("{base}/runners/local/credentials")).await.expect("Credentials tab");
        let applied = text_of(&see(c, "//*[@id='apply-applied']", "the Applied state").await).await;
        assert!(applied.starts_with("Applied: 1 instance on generation 2"), "{applied}");
    })
    .catch_unwind()
    .await;
    if outcome.is_err() {
        save_failure_evidence(c, "the_guide_works_on_the_dev_servers_local_runner").await;
    }
    browser.close().await;
    let _ = server.kill();
    let _ = server.wait();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
