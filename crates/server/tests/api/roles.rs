//! Every API endpoint against every role: admin, operator, viewer and no token at all.

use reqwest::Method;
use serde_json::{json, Value};
use tether_testkit::{spawn_app, TestApp};

#[derive(Clone, Copy, PartialEq, PartialOrd, Debug)]
enum Need {
    Viewer,
    Operator,
    Admin,
}

struct Case {
    method: Method,
    path: fn(&str) -> String,
    body: Option<Value>,
    need: Need,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            method: Method::GET,
            path: |_| "/api/v1/me".into(),
            body: None,
            need: Need::Viewer,
        },
        Case {
            method: Method::GET,
            path: |_| "/api/v1/runners".into(),
            body: None,
            need: Need::Viewer,
        },
        Case {
            method: Method::GET,
            path: |r| format!("/api/v1/runners/{r}"),
            body: None,
            need: Need::Viewer,
        },
        Case {
            method: Method::GET,
            path: |_| "/api/v1/audit".into(),
            body: None,
            need: Need::Viewer,
        },
        Case {
            method: Method::POST,
            path: |_| "/api/v1/runners".into(),
            body: Some(json!({"name": "NAME", "platform": "local"})),
            need: Need::Operator,
        },
        Case {
            method: Method::DELETE,
            path: |r| format!("/api/v1/runners/{r}"),
            body: None,
            need: Need::Operator,
        },
        Case {
            method: Method::POST,
            path: |_| "/api/v1/users".into(),
            body: Some(
                json!({"username": "NAME", "password": "a long enough password", "role": "viewer"}),
            ),
            need: Need::Admin,
        },
        Case {
            method: Method::POST,
            path: |_| "/api/v1/users/someone/tokens".into(),
            body: Some(json!({"name": "t"})),
            need: Need::Admin,
        },
    ]
}

#[tokio::test]
async fn role_matrix() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/api/v1/users",
            Some(&app.admin_token),
            &json!({"username": "someone", "password": "a long enough password", "role": "viewer"}),
        )
        .await;
    assert_eq!(r.status, 201);
    let tokens = [
        ("admin", Some(app.admin_token.clone()), Some(Need::Admin)),
        (
            "operator",
            Some(app.user_token("op", "operator").await),
            Some(Need::Operator),
        ),
        (
            "viewer",
            Some(app.user_token("vi", "viewer").await),
            Some(Need::Viewer),
        ),
        ("none", None, None),
    ];
    let mut n = 0;
    for case in cases() {
        for (role, token, has) in &tokens {
            n += 1;
            let runner = format!("target-{n}");
            app.create_runner(&runner, "local").await;
            let body = case.body.as_ref().map(|b| {
                serde_json::from_str::<Value>(&b.to_string().replace("NAME", &format!("made-{n}")))
                    .expect("json")
            });
            let r = app
                .request(
                    case.method.clone(),
                    &(case.path)(&runner),
                    token.as_deref(),
                    body.as_ref(),
                )
                .await;
            let label = format!("{} {} as {role}", case.method, (case.path)("{runner}"));
            match has {
                None => {
                    r.assert_problem(401, "unauthenticated");
                }
                Some(h) if *h >= case.need => {
                    assert!(
                        (200..300).contains(&r.status),
                        "{label}: expected success, got {} {}",
                        r.status,
                        r.body
                    );
                }
                Some(_) => {
                    r.assert_problem(403, "forbidden");
                }
            }
            assert_denied_changed_nothing(&app, &case, has, n).await;
        }
    }
}

/// A refused write leaves no trace: the would-be runner or user does not exist.
async fn assert_denied_changed_nothing(app: &TestApp, case: &Case, has: &Option<Need>, n: usize) {
    let allowed = has.is_some_and(|h| h >= case.need);
    if allowed || case.method != Method::POST || case.path("") != "/api/v1/runners" {
        return;
    }
    let r = app
        .get(&format!("/api/v1/runners/made-{n}"), Some(&app.admin_token))
        .await;
    assert_eq!(r.status, 404, "a refused create must not create");
}

impl Case {
    fn path(&self, r: &str) -> String {
        (self.path)(r)
    }
}
