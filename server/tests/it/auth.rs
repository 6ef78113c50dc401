//! Register, login, refresh rotation with reuse detection, logout, rate limits.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Engine, TestServer, assert_error};

crate::both_databases!(
    register_and_login,
    refresh_rotates_and_reuse_revokes_the_family,
    logout_revokes,
    login_is_rate_limited
);

async fn register_and_login(engine: Engine) {
    let server = TestServer::start(engine).await;
    let user = server.register("ann").await;
    assert_eq!(user["username"], "ann");
    assert_eq!(user["email"], "ann@example.com");
    assert!(user["id"].as_i64().is_some());
    assert!(user.get("password").is_none() && user.get("password_hash").is_none());

    let again = server
        .post_json(
            "/auth/register",
            &json!({"username": "ann", "email": "other@example.com", "password": "long enough"}),
        )
        .await;
    assert_error(again, StatusCode::CONFLICT, "taken").await;
    for (body, code) in [
        (
            json!({"username": "a", "email": "a@example.com", "password": "long enough"}),
            "invalid_username",
        ),
        (
            json!({"username": "bob", "email": "not-an-email", "password": "long enough"}),
            "invalid_email",
        ),
        (
            json!({"username": "bob", "email": "bob@example.com", "password": "short"}),
            "weak_password",
        ),
        (
            json!({"username": "bob", "email": "bob@example.com", "password": "long enough", "admin": true}),
            "invalid_json",
        ),
    ] {
        assert_error(
            server.post_json("/auth/register", &body).await,
            StatusCode::BAD_REQUEST,
            code,
        )
        .await;
    }

    let (status, tokens) = server.login("ann", "correct horse battery").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tokens["token_type"], "bearer");
    assert_eq!(tokens["expires_in"], 900);
    let (status, body) = server.login("ann", "wrong password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["message"], "wrong username or password");
    let (status, body) = server.login("nobody", "wrong password").await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "an unknown user looks like a wrong password"
    );
    assert_eq!(body["error"]["message"], "wrong username or password");
}

async fn refresh_rotates_and_reuse_revokes_the_family(engine: Engine) {
    let server = TestServer::start(engine).await;
    let (_, first) = server.user("ann").await;
    let rotated = server
        .post_json("/auth/refresh", &json!({"refresh_token": first}))
        .await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let rotated: serde_json::Value = rotated.json().await.expect("json");
    let second = rotated["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    assert_ne!(second, first);
    let access = rotated["access_token"].as_str().expect("access");
    assert_eq!(server.get(access, "/files/").await.status(), StatusCode::OK);

    // Replaying the first token is reuse: refused, and the live second token dies with it.
    let replay = server
        .post_json("/auth/refresh", &json!({"refresh_token": first}))
        .await;
    assert_error(replay, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let after = server
        .post_json("/auth/refresh", &json!({"refresh_token": second}))
        .await;
    assert_error(after, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // Another login is a new family and works.
    let (_, other) = server.user("bob").await;
    assert_eq!(
        server
            .post_json("/auth/refresh", &json!({"refresh_token": other}))
            .await
            .status(),
        StatusCode::OK
    );
    let garbage = server
        .post_json("/auth/refresh", &json!({"refresh_token": "not-a-token"}))
        .await;
    assert_error(garbage, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

async fn logout_revokes(engine: Engine) {
    let server = TestServer::start(engine).await;
    let (_, refresh) = server.user("ann").await;
    let out = server
        .post_json("/auth/logout", &json!({"refresh_token": refresh}))
        .await;
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    let again = server
        .post_json("/auth/logout", &json!({"refresh_token": refresh}))
        .await;
    assert_eq!(
        again.status(),
        StatusCode::NO_CONTENT,
        "logout is idempotent"
    );
    let refreshed = server
        .post_json("/auth/refresh", &json!({"refresh_token": refresh}))
        .await;
    assert_error(refreshed, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

async fn login_is_rate_limited(engine: Engine) {
    let server = TestServer::start(engine).await;
    server.register("ann").await;
    for _ in 0..5 {
        assert_eq!(
            server.login("ann", "guess").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let limited = server
        .post_json(
            "/auth/login",
            &json!({"username": "ann", "password": "correct horse battery"}),
        )
        .await;
    let retry_after: u64 = limited
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After header");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_error(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Other users are not affected by ann's limit.
    server.register("bob").await;
    assert_eq!(
        server.login("bob", "correct horse battery").await.0,
        StatusCode::OK
    );
    // Nor is ann herself on another address: a stranger's failures do not lock her out.
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    let answer = elsewhere
        .post(server.url("/auth/login"))
        .json(&json!({"username": "ann", "password": "correct horse battery"}))
        .send()
        .await
        .expect("login from 127.0.0.2");
    assert_eq!(answer.status(), StatusCode::OK);
}
