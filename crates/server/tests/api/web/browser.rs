//! A browser by hand for the web UI tests: plain HTTP with cookies kept per visitor, redirects not
//! followed (so each 303 is checked), and small HTML look-ups by id and by form field.

use serde_json::json;
use tether_testkit::{TestApp, TestResponse};

pub const PASSWORD: &str = "a long enough password";

/// Creates a user through the API (as the admin) with [`PASSWORD`].
pub async fn user(app: &TestApp, name: &str, role: &str) {
    let r = app
        .post(
            "/api/v1/users",
            Some(&app.admin_token),
            &json!({"username": name, "password": PASSWORD, "role": role}),
        )
        .await;
    assert_eq!(r.status, 201, "create user: {}", r.body);
}

/// One visitor: their session cookie and the CSRF token their pages carry.
#[derive(Debug)]
pub struct Browser<'a> {
    pub app: &'a TestApp,
    http: reqwest::Client,
    pub cookie: Option<String>,
    pub csrf: String,
}

impl<'a> Browser<'a> {
    pub fn new(app: &'a TestApp) -> Self {
        Self {
            app,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .expect("client"),
            cookie: None,
            csrf: String::new(),
        }
    }

    /// Logs in (panics unless it works) and picks up the CSRF token of the Runners page.
    pub async fn login(app: &'a TestApp, username: &str, password: &str) -> Self {
        let mut b = Self::new(app);
        let r = b.try_login(username, password, None).await;
        assert_eq!(r.status, 303, "login as {username}: {}", r.body);
        let page = b.get("/runners").await;
        assert_eq!(page.status, 200, "{}", page.body);
        b.csrf = field_value(&page.body, "csrf").expect("a CSRF token on the page");
        b
    }

    /// The login form as a browser fills it: GET /login (its token and cookie), then POST.
    pub async fn try_login(
        &mut self,
        username: &str,
        password: &str,
        next: Option<&str>,
    ) -> TestResponse {
        let form = self.get("/login").await;
        assert_eq!(form.status, 200, "{}", form.body);
        let token = field_value(&form.body, "csrf").expect("login form token");
        let login_cookie = cookie_value(&form, "tether_login").expect("login cookie");
        let mut fields = vec![
            ("csrf", token.as_str()),
            ("username", username),
            ("password", password),
        ];
        if let Some(n) = next {
            fields.push(("next", n));
        }
        let r = self
            .send(
                self.http
                    .post(self.app.url("/login"))
                    .header("cookie", format!("tether_login={login_cookie}"))
                    .form(&fields),
            )
            .await;
        if let Some(session) = cookie_value(&r, "tether_session") {
            self.cookie = Some(session);
        }
        r
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> TestResponse {
        TestApp::read(req.send().await.expect("request sent")).await
    }

    fn with_cookie(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.cookie {
            Some(c) => req.header("cookie", format!("tether_session={c}")),
            None => req,
        }
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.send(self.with_cookie(self.http.get(self.app.url(path))))
            .await
    }

    /// A form POST with this visitor's CSRF token added.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> TestResponse {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &all).await
    }

    /// A form POST of exactly `fields` (no token added).
    pub async fn post_raw(&self, path: &str, fields: &[(&str, &str)]) -> TestResponse {
        self.send(self.with_cookie(self.http.post(self.app.url(path)).form(fields)))
            .await
    }

    /// Opens a streaming GET (for /ui/events).
    pub async fn stream(&self, path: &str) -> reqwest::Response {
        self.with_cookie(self.http.get(self.app.url(path)))
            .send()
            .await
            .expect("request sent")
    }
}

/// The value a `Set-Cookie` header of the response gives `name`, if any.
pub fn cookie_value(r: &TestResponse, name: &str) -> Option<String> {
    set_cookie(r, name).and_then(|h| {
        h.split(';')
            .next()
            .and_then(|kv| kv.split_once('='))
            .map(|(_, v)| v.to_owned())
    })
}

/// The whole `Set-Cookie` header for `name`.
pub fn set_cookie(r: &TestResponse, name: &str) -> Option<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// The `value` of the first input named `name`.
pub fn field_value(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\" value=\""))?;
    let rest = &html[at + name.len() + 15..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// The text inside the element with `id` (up to its first child tag).
pub fn by_id(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let rest = &html[at..];
    let rest = &rest[rest.find('>')? + 1..];
    Some(rest[..rest.find('<')?].trim().to_owned())
}

/// The text of HTML with its character references decoded (as a browser shows it).
pub fn unescape(html: &str) -> String {
    let mut out = html.to_owned();
    for (entity, ch) in [
        ("&lt;", "<"),
        ("&#60;", "<"),
        ("&gt;", ">"),
        ("&#62;", ">"),
        ("&quot;", "\""),
        ("&#34;", "\""),
        ("&#39;", "'"),
        ("&amp;", "&"),
        ("&#38;", "&"),
    ] {
        out = out.replace(entity, ch);
    }
    out
}

/// Whether the element with `id` exists.
pub fn has_id(html: &str, id: &str) -> bool {
    html.contains(&format!("id=\"{id}\""))
}

/// The generations of a runner's credentials and their states, from the API.
pub async fn generations(app: &TestApp, runner: &str) -> Vec<(u64, String)> {
    let c = app
        .get(
            &format!("/api/v1/runners/{runner}/credentials"),
            Some(&app.admin_token),
        )
        .await
        .json();
    c["generations"]
        .as_array()
        .expect("generations")
        .iter()
        .map(|g| {
            (
                g["generation"].as_u64().expect("generation"),
                g["state"].as_str().expect("state").to_owned(),
            )
        })
        .collect()
}
