//! The two-user authorization matrix, the JWT negative suite and forged uploads.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Engine, TestServer, assert_error, bytes};

crate::both_databases!(
    other_users_files_are_not_found,
    jwt_negative_suite,
    forged_uploads_are_refused
);

async fn other_users_files_are_not_found(engine: Engine) {
    let server = TestServer::start(engine).await;
    let (ann, _) = server.user("ann").await;
    let (bob, _) = server.user("bob").await;
    let file: Value = server
        .upload(&ann, "secret.txt", b"ann's secret".to_vec())
        .await
        .json()
        .await
        .expect("json");
    let id = file["id"].as_i64().expect("id");
    let mut accepted = 0;
    for (method, path) in [
        (Method::GET, format!("/files/{id}/download")),
        (Method::GET, format!("/files/{id}/download?version=1")),
        (Method::GET, format!("/files/{id}/versions")),
        (Method::DELETE, format!("/files/{id}")),
    ] {
        let response = server
            .client
            .request(method.clone(), server.url(&path))
            .bearer_auth(&bob)
            .send()
            .await
            .expect("request");
        if response.status() != StatusCode::NOT_FOUND {
            accepted += 1;
        }
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
        // The owner still can.
        let own = server
            .client
            .request(Method::GET, server.url(&format!("/files/{id}/versions")))
            .bearer_auth(&ann)
            .send()
            .await
            .expect("request");
        assert_eq!(own.status(), StatusCode::OK);
    }
    assert_eq!(accepted, 0);
    let listing: Value = server
        .get(&bob, "/files/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listing["files"], json!([]));
    let changes: Value = server
        .get(&bob, "/sync/changes")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(changes["changes"], json!([]));
    // Bob uploading to the same path creates his own file, not a version of ann's.
    let his: Value = server
        .upload(&bob, "secret.txt", b"bob's".to_vec())
        .await
        .json()
        .await
        .expect("json");
    assert_ne!(his["id"], file["id"]);
    assert_eq!(his["version"], 1);
}

async fn jwt_negative_suite(engine: Engine) {
    let server = TestServer::start(engine).await;
    let (token, refresh) = server.user("ann").await;
    let claims_part = token.split('.').nth(1).expect("claims").to_owned();
    let forged_none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{claims_part}.");
    let other_key = cairn_server::auth::TokenKeys::new(b"another-secret-another-secret-32b");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let wrong_key = other_key.issue(1, "ann", now, 900).expect("issue");
    let server_keys = cairn_server::auth::TokenKeys::new(b"integration-test-secret-of-32-bytes!");
    let expired = server_keys.issue(1, "ann", now - 3600, 900).expect("issue");
    assert_eq!(
        server
            .get(
                &server_keys.issue(1, "ann", now, 900).expect("issue"),
                "/files/"
            )
            .await
            .status(),
        StatusCode::OK,
        "control: a good token"
    );
    let wrong_audience = {
        let claims = json!({"sub": "1", "name": "ann", "iss": "cairn", "aud": "someone-else", "iat": now, "exp": now + 900});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"integration-test-secret-of-32-bytes!"),
        )
        .expect("encode")
    };
    let mut accepted = 0;
    for (what, bad) in [
        ("alg none", forged_none.as_str()),
        ("wrong key", &wrong_key),
        ("expired", &expired),
        ("wrong audience", &wrong_audience),
        ("refresh token as access token", &refresh),
        ("garbage", "abc.def.ghi"),
    ] {
        let response = server.get(bad, "/files/").await;
        if response.status() != StatusCode::UNAUTHORIZED {
            accepted += 1;
        }
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().ok()),
            Some(Some("Bearer")),
            "{what}"
        );
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    assert_eq!(accepted, 0);
    let anonymous = server
        .client
        .get(server.url("/files/"))
        .send()
        .await
        .expect("request");
    assert_error(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let basic = server
        .client
        .get(server.url("/files/"))
        .header("Authorization", "Basic YTpi")
        .send()
        .await
        .expect("request");
    assert_error(basic, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

async fn forged_uploads_are_refused(engine: Engine) {
    let server = TestServer::start_with(engine, |config| config.upload_size_max = 200_000).await;
    let (token, _) = server.user("ann").await;
    let post = |form: reqwest::multipart::Form| {
        server
            .client
            .post(server.url("/files/upload"))
            .bearer_auth(&token)
            .multipart(form)
            .send()
    };
    let file = || reqwest::multipart::Part::bytes(b"x".to_vec());
    use reqwest::multipart::Form;
    for (form, code) in [
        (Form::new().part("file", file()), "invalid_upload"),
        (Form::new().text("path", "a.txt"), "invalid_upload"),
        (
            Form::new()
                .text("path", "../escape.txt")
                .part("file", file()),
            "invalid_path",
        ),
        (
            Form::new().text("path", "/abs.txt").part("file", file()),
            "invalid_path",
        ),
        (
            Form::new().text("path", "a//b").part("file", file()),
            "invalid_path",
        ),
        (
            Form::new()
                .text("path", "a.txt")
                .part("file", file())
                .text("owner", "bob"),
            "invalid_upload",
        ),
        (
            Form::new()
                .text("path", "a.txt")
                .part("file", file())
                .part("file", file()),
            "invalid_upload",
        ),
    ] {
        assert_error(
            post(form).await.expect("request"),
            StatusCode::BAD_REQUEST,
            code,
        )
        .await;
    }
    let too_big = post(
        Form::new()
            .text("path", "big.bin")
            .part("file", reqwest::multipart::Part::bytes(bytes(300_000, 1))),
    )
    .await
    .expect("request");
    assert_eq!(too_big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let not_multipart = server
        .client
        .post(server.url("/files/upload"))
        .bearer_auth(&token)
        .body("plain")
        .send()
        .await
        .expect("request");
    assert_eq!(not_multipart.status(), StatusCode::BAD_REQUEST);
    // A file cannot become the parent of another.
    assert_eq!(
        server.upload(&token, "f", b"file".to_vec()).await.status(),
        StatusCode::CREATED
    );
    assert_error(
        server.upload(&token, "f/g", b"x".to_vec()).await,
        StatusCode::CONFLICT,
        "path_conflict",
    )
    .await;
    // Nor does a file replace a directory: its files would leave the tree and stay listed.
    assert_eq!(
        server
            .upload(&token, "d/a", b"in d".to_vec())
            .await
            .status(),
        StatusCode::CREATED
    );
    let refused = assert_error(
        server.upload(&token, "d", b"x".to_vec()).await,
        StatusCode::CONFLICT,
        "path_conflict",
    )
    .await;
    assert!(refused.contains("a directory is there"), "{refused}");
    let listing: Value = server
        .get(&token, "/files/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        listing["files"].as_array().map(Vec::len),
        Some(2),
        "nothing forged was stored, d/a stays: {listing}"
    );
    let d_a = server
        .get(&token, "/files/?path=d/a")
        .await
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(d_a["files"][0]["size"], 4, "{d_a}");
    let malformed = server
        .client
        .post(server.url("/auth/login"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_error(malformed, StatusCode::BAD_REQUEST, "invalid_json").await;
}
