use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::Value;
use tether_testkit::{spawn_app, TestApp, TestResponse};

async fn runner(app: &TestApp, name: &str) -> (String, String) {
    let c = app.create_runner(name, "local").await;
    (
        c["credentials"]["client_id"]
            .as_str()
            .expect("client_id")
            .to_owned(),
        c["credentials"]["client_secret"]
            .as_str()
            .expect("client_secret")
            .to_owned(),
    )
}

#[track_caller]
fn assert_oauth_error(r: &TestResponse, status: u16, error: &str) {
    assert_eq!(r.status, status, "body: {}", r.body);
    assert_eq!(r.json()["error"], error, "body: {}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    if status == 401 {
        assert!(
            r.header("www-authenticate")
                .is_some_and(|h| h.starts_with("Basic")),
            "401 needs WWW-Authenticate"
        );
    }
}

fn decode_part(part: &str) -> Value {
    serde_json::from_slice(&B64.decode(part).expect("base64url")).expect("json")
}

#[tokio::test]
async fn both_client_auth_methods_issue_verifiable_eddsa_jwts() {
    let app = spawn_app().await;
    let (client_id, secret) = runner(&app, "tok").await;
    let jwks = app.get("/.well-known/jwks.json", None).await.json();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    let x: [u8; 32] = B64
        .decode(key["x"].as_str().expect("x"))
        .expect("b64")
        .try_into()
        .expect("32 bytes");
    let verifying = VerifyingKey::from_bytes(&x).expect("ed25519 key");
    let runner_id = app
        .get("/api/v1/runners/tok", Some(&app.admin_token))
        .await
        .json()["id"]
        .clone();

    for r in [
        app.token_basic(&client_id, &secret).await,
        app.token_form(&client_id, &secret).await,
    ] {
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(r.header("pragma"), Some("no-cache"));
        let body = r.json();
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 600);
        let token = body["access_token"].as_str().expect("access_token");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = decode_part(parts[0]);
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["typ"], "at+jwt");
        assert_eq!(header["kid"], key["kid"]);
        let sig = Signature::from_slice(&B64.decode(parts[2]).expect("sig")).expect("64 bytes");
        verifying
            .verify_strict(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .expect("signature verifies against the JWKS key");
        let claims = decode_part(parts[1]);
        assert_eq!(claims["sub"], runner_id);
        assert_eq!(claims["client_id"], client_id.as_str());
        assert_eq!(claims["gen"], 1);
        assert_eq!(claims["iss"], app.base_url.as_str());
        assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));
        let (iat, exp) = (
            claims["iat"].as_i64().expect("iat"),
            claims["exp"].as_i64().expect("exp"),
        );
        assert_eq!(exp - iat, 600);
    }
}

#[tokio::test]
async fn wrong_truncated_and_foreign_secrets_are_invalid_client() {
    let app = spawn_app().await;
    let (id_a, secret_a) = runner(&app, "a").await;
    let (_id_b, secret_b) = runner(&app, "b").await;

    assert_oauth_error(
        &app.token_basic(&id_a, &secret_b).await,
        401,
        "invalid_client",
    );
    assert_oauth_error(
        &app.token_form(&id_a, &secret_b).await,
        401,
        "invalid_client",
    );
    let truncated = &secret_a[..secret_a.len() - 3];
    let r = app.token_basic(&id_a, truncated).await;
    assert_oauth_error(&r, 401, "invalid_client");
    assert!(r.json()["error_description"]
        .as_str()
        .expect("description")
        .contains("malformed"));
    let mut altered = secret_a.clone().into_bytes();
    altered[8] = if altered[8] == b'A' { b'B' } else { b'A' };
    assert_oauth_error(
        &app.token_basic(&id_a, &String::from_utf8(altered).expect("ascii"))
            .await,
        401,
        "invalid_client",
    );
    assert_oauth_error(
        &app.token_basic("tcid_0000000000000000000000", &secret_a)
            .await,
        401,
        "invalid_client",
    );
    assert_oauth_error(
        &app.token_basic("not-a-client", &secret_a).await,
        401,
        "invalid_client",
    );
    assert_oauth_error(&app.token_basic(&id_a, "").await, 401, "invalid_client");
    // The right pair still works after all that: failures do not lock the runner out.
    assert_eq!(app.token_basic(&id_a, &secret_a).await.status, 200);
}

#[tokio::test]
async fn malformed_token_requests() {
    let app = spawn_app().await;
    let (id, secret) = runner(&app, "m").await;
    let no_auth = app
        .post_form(
            "/oauth/token",
            None,
            None,
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_oauth_error(&no_auth, 401, "invalid_client");
    let both = app
        .post_form(
            "/oauth/token",
            Some((&id, &secret)),
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("client_secret", &secret),
            ],
        )
        .await;
    assert_oauth_error(&both, 400, "invalid_request");
    let no_grant = app
        .post_form(
            "/oauth/token",
            Some((&id, &secret)),
            None,
            &[("scope", "x")],
        )
        .await;
    assert_oauth_error(&no_grant, 400, "invalid_request");
    let password = app
        .post_form(
            "/oauth/token",
            Some((&id, &secret)),
            None,
            &[("grant_type", "password")],
        )
        .await;
    assert_oauth_error(&password, 400, "unsupported_grant_type");
    let repeated = app
        .post_form(
            "/oauth/token",
            Some((&id, &secret)),
            None,
            &[
                ("grant_type", "client_credentials"),
                ("grant_type", "client_credentials"),
            ],
        )
        .await;
    assert_oauth_error(&repeated, 400, "invalid_request");
    let json_body = app
        .http
        .post(app.url("/oauth/token"))
        .basic_auth(&id, Some(&secret))
        .json(&serde_json::json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .expect("sent");
    assert_oauth_error(&TestApp::read(json_body).await, 400, "invalid_request");
    let garbage_basic = app
        .http
        .post(app.url("/oauth/token"))
        .header("authorization", "Basic %%%")
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("sent");
    assert_oauth_error(&TestApp::read(garbage_basic).await, 401, "invalid_client");
}

#[tokio::test]
async fn introspection_by_owner_admin_and_strangers() {
    let app = spawn_app().await;
    let (id_a, secret_a) = runner(&app, "a").await;
    let (id_b, secret_b) = runner(&app, "b").await;
    let token = app.access_token(&id_a, &secret_a).await;

    let own = app
        .post_form(
            "/oauth/introspect",
            Some((&id_a, &secret_a)),
            None,
            &[("token", &token)],
        )
        .await;
    assert_eq!(own.status, 200, "{}", own.body);
    let own = own.json();
    assert_eq!(own["active"], true);
    assert_eq!(own["client_id"], id_a.as_str());
    assert_eq!(own["gen"], 1);
    assert_eq!(own["token_type"], "Bearer");

    let admin = app
        .post_form(
            "/oauth/introspect",
            None,
            Some(&app.admin_token),
            &[("token", &token)],
        )
        .await;
    assert_eq!(admin.json()["active"], true);

    let other = app
        .post_form(
            "/oauth/introspect",
            Some((&id_b, &secret_b)),
            None,
            &[("token", &token)],
        )
        .await;
    assert_eq!(
        other.json(),
        serde_json::json!({"active": false}),
        "a client learns nothing about others' tokens"
    );

    let garbage = app
        .post_form(
            "/oauth/introspect",
            Some((&id_a, &secret_a)),
            None,
            &[("token", "x.y.z")],
        )
        .await;
    assert_eq!(garbage.json(), serde_json::json!({"active": false}));

    let viewer = app.user_token("vera", "viewer").await;
    let r = app
        .post_form(
            "/oauth/introspect",
            None,
            Some(&viewer),
            &[("token", &token)],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);

    assert_oauth_error(
        &app.post_form("/oauth/introspect", None, None, &[("token", &token)])
            .await,
        401,
        "invalid_client",
    );
    assert_oauth_error(
        &app.post_form(
            "/oauth/introspect",
            Some((&id_a, &secret_b)),
            None,
            &[("token", &token)],
        )
        .await,
        401,
        "invalid_client",
    );
    assert_oauth_error(
        &app.post_form("/oauth/introspect", Some((&id_a, &secret_a)), None, &[])
            .await,
        400,
        "invalid_request",
    );
}

#[tokio::test]
async fn revocation_kills_a_token_at_once() {
    let app = spawn_app().await;
    let (id_a, secret_a) = runner(&app, "a").await;
    let (id_b, secret_b) = runner(&app, "b").await;
    let token = app.access_token(&id_a, &secret_a).await;
    let other = app.access_token(&id_a, &secret_a).await;

    let foreign = app
        .post_form(
            "/oauth/revoke",
            Some((&id_b, &secret_b)),
            None,
            &[("token", &token)],
        )
        .await;
    assert_oauth_error(&foreign, 400, "invalid_request");

    let r = app
        .post_form(
            "/oauth/revoke",
            Some((&id_a, &secret_a)),
            None,
            &[("token", &token), ("token_type_hint", "access_token")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let intro = app
        .post_form(
            "/oauth/introspect",
            None,
            Some(&app.admin_token),
            &[("token", &token)],
        )
        .await;
    assert_eq!(intro.json()["active"], false);
    let still = app
        .post_form(
            "/oauth/introspect",
            None,
            Some(&app.admin_token),
            &[("token", &other)],
        )
        .await;
    assert_eq!(still.json()["active"], true, "only the revoked token dies");

    let again = app
        .post_form(
            "/oauth/revoke",
            Some((&id_a, &secret_a)),
            None,
            &[("token", &token)],
        )
        .await;
    assert_eq!(again.status, 200, "revoking twice is fine");
    let junk = app
        .post_form(
            "/oauth/revoke",
            Some((&id_a, &secret_a)),
            None,
            &[("token", "junk")],
        )
        .await;
    assert_eq!(
        junk.status, 200,
        "RFC 7009: unknown tokens are answered with 200"
    );
    assert_oauth_error(
        &app.post_form("/oauth/revoke", None, None, &[("token", &other)])
            .await,
        401,
        "invalid_client",
    );
}

#[tokio::test]
async fn discovery_documents() {
    let app = spawn_app().await;
    let meta = app
        .get("/.well-known/oauth-authorization-server", None)
        .await
        .json();
    assert_eq!(meta["issuer"], app.base_url.as_str());
    assert_eq!(
        meta["token_endpoint"],
        format!("{}/oauth/token", app.base_url)
    );
    assert_eq!(
        meta["jwks_uri"],
        format!("{}/.well-known/jwks.json", app.base_url)
    );
    assert_eq!(
        meta["grant_types_supported"],
        serde_json::json!(["client_credentials"])
    );
    let jwks = app
        .get(
            meta["jwks_uri"]
                .as_str()
                .expect("jwks_uri")
                .trim_start_matches(&app.base_url),
            None,
        )
        .await;
    assert_eq!(jwks.status, 200);
    assert_eq!(jwks.json()["keys"][0]["alg"], "EdDSA");
}

/// RFC 9110 §11.1: the authentication scheme is case-insensitive, on the API, introspection and
/// the runner connect alike; a runner refused at connect is told about its access token, not
/// about API tokens.
#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_everywhere() {
    let app = spawn_app().await;
    let (id, secret) = runner(&app, "case").await;
    let token = app.access_token(&id, &secret).await;
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let api = app
            .http
            .get(format!("{}/api/v1/runners", app.base_url))
            .header("authorization", format!("{scheme} {}", app.admin_token))
            .send()
            .await
            .expect("api");
        assert_eq!(api.status(), 200, "API with {scheme}");
        let introspected: Value = app
            .http
            .post(format!("{}/oauth/introspect", app.base_url))
            .header("authorization", format!("{scheme} {}", app.admin_token))
            .form(&[("token", token.as_str())])
            .send()
            .await
            .expect("introspect")
            .json()
            .await
            .expect("json");
        assert_eq!(introspected["active"], true, "introspection with {scheme}");
        let url = format!(
            "{}/runner/v1/connect",
            app.base_url.replace("http://", "ws://")
        );
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
                .expect("request");
        req.headers_mut().insert(
            "authorization",
            format!("{scheme} {token}").parse().expect("header"),
        );
        assert!(
            tokio_tungstenite::connect_async(req).await.is_ok(),
            "connect with {scheme}"
        );
    }
    let refused = app
        .http
        .get(format!("{}/runner/v1/connect", app.base_url))
        .header("authorization", "Bearer not-a-token")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .expect("connect");
    assert_eq!(refused.status(), 401);
    let problem: Value = refused.json().await.expect("problem");
    let detail = problem["detail"].as_str().expect("detail");
    assert!(
        detail.contains("access token") && detail.contains("/oauth/token"),
        "{detail}"
    );
    assert!(!detail.contains("tokens create"), "{detail}");
}

/// The token endpoint does not tell which client ids exist: a malformed secret, a wrong one and an
/// unknown client all get the same answer, word for word.
#[tokio::test]
async fn a_malformed_secret_is_answered_alike_for_real_and_unknown_client_ids() {
    let app = spawn_app().await;
    let (id, secret) = runner(&app, "probe").await;
    let unknown = format!("tcid_{}", "A".repeat(22));
    let wrong = format!("{}x", &secret[..secret.len() - 1]);
    let app = &app;
    let answers: Vec<(u16, Value)> = futures::future::join_all(
        [
            (id.as_str(), "tcs_short"),
            (unknown.as_str(), "tcs_short"),
            (id.as_str(), wrong.as_str()),
            (unknown.as_str(), secret.as_str()),
        ]
        .map(|(client, secret)| async move {
            let r = app.token_basic(client, secret).await;
            (r.status, r.json())
        }),
    )
    .await;
    for (status, body) in &answers {
        assert_eq!(
            (*status, body),
            (answers[0].0, &answers[0].1),
            "{answers:#?}"
        );
    }
    assert_eq!(answers[0].0, 401);
    assert_eq!(answers[0].1["error"], "invalid_client");
}
