//! `/auth/*`: register, login, refresh, logout.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use cairn_protocol::api::{
    AccessToken, LoginRequest, RefreshRequest, RefreshToken, RegisterRequest, TokenResponse,
    UserInfo,
};

use super::error::ApiError;
use super::{ApiJson, AppState, ClientIp, now_ms};
use crate::auth::{self, Rotation, TokenState};
use crate::db::{self, AuditRecord, DbError};
use crate::limits::{
    ACCESS_TOKEN_TTL, AUTH_ATTEMPTS_PER_IP_PER_MINUTE, AUTH_ATTEMPTS_PER_USER_ALL_IPS_PER_MINUTE,
    AUTH_ATTEMPTS_PER_USER_PER_MINUTE, REFRESH_TOKEN_TTL,
};

const MINUTE: Duration = Duration::from_secs(60);

/// Create a user (and their `default` folder).
#[utoipa::path(post, path = "/auth/register", request_body = RegisterRequest,
    responses((status = 201, body = UserInfo), (status = 400, body = cairn_protocol::api::ErrorBody),
              (status = 409, body = cairn_protocol::api::ErrorBody), (status = 429, body = cairn_protocol::api::ErrorBody)))]
pub async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(request): ApiJson<RegisterRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let now = now_ms();
    state
        .limiter
        .check(
            &format!("ip:{ip}"),
            AUTH_ATTEMPTS_PER_IP_PER_MINUTE,
            MINUTE,
            now,
        )
        .await
        .map_err(ApiError::RateLimited)?;
    check_username(&request.username)?;
    check_email(&request.email)?;
    let password = request.password.0.clone();
    if password.chars().count() < 8 || password.len() > 1024 {
        return Err(ApiError::BadRequest(
            "weak_password",
            "a password needs 8 to 1024 characters".to_owned(),
        ));
    }
    let hash = hash_on_cpu(&state, password).await?;
    let quota = i64::try_from(state.config.quota_default).unwrap_or(i64::MAX);
    let created = db::create_user(
        &state.db,
        &request.username,
        &request.email,
        &hash,
        quota,
        &state.empty_root.to_string(),
        now,
    )
    .await;
    let id = match created {
        Ok(id) => id,
        Err(DbError::Conflict) => {
            audit(&state, None, &request.username, &ip, "register", "conflict").await;
            return Err(ApiError::Conflict(
                "taken",
                "that username or email is already registered; log in instead".to_owned(),
            ));
        }
        Err(err) => return Err(err.into()),
    };
    audit(&state, Some(id), &request.username, &ip, "register", "ok").await;
    let body = UserInfo {
        id,
        username: request.username,
        email: request.email,
    };
    Ok((StatusCode::CREATED, Json(body)))
}

/// Exchange a username and password for tokens.
#[utoipa::path(post, path = "/auth/login", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = cairn_protocol::api::ErrorBody),
              (status = 429, body = cairn_protocol::api::ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(request): ApiJson<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let now = now_ms();
    state
        .limiter
        .check(
            &format!("ip:{ip}"),
            AUTH_ATTEMPTS_PER_IP_PER_MINUTE,
            MINUTE,
            now,
        )
        .await
        .map_err(ApiError::RateLimited)?;
    // Counted per username only for a name that could exist: any other string (up to a body's
    // size) would be a new counter each, and is refused below as an unknown user anyway.
    if check_username(&request.username).is_ok() {
        state
            .limiter
            .check(
                &format!("user:{}:{ip}", request.username),
                AUTH_ATTEMPTS_PER_USER_PER_MINUTE,
                MINUTE,
                now,
            )
            .await
            .map_err(ApiError::RateLimited)?;
        state
            .limiter
            .check(
                &format!("user:{}", request.username),
                AUTH_ATTEMPTS_PER_USER_ALL_IPS_PER_MINUTE,
                MINUTE,
                now,
            )
            .await
            .map_err(ApiError::RateLimited)?;
    }
    let user = db::user_by_name(&state.db, &request.username).await?;
    let phc = user.as_ref().map_or_else(
        || auth::dummy_hash().to_owned(),
        |u| u.password_hash.clone(),
    );
    let password = request.password.0.clone();
    let permit = state.cpu.acquire().await.map_err(ApiError::internal)?;
    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&password, &phc)).await?;
    drop(permit);
    let Some(user) = user.filter(|_| ok) else {
        audit(&state, None, &request.username, &ip, "login", "denied").await;
        return Err(ApiError::Unauthorized(
            "wrong username or password".to_owned(),
        ));
    };
    audit(&state, Some(user.id), &user.username, &ip, "login", "ok").await;
    let family = auth::new_family().map_err(ApiError::internal)?;
    issue_tokens(&state, user.id, &user.username, &family, now)
        .await
        .map(Json)
}

/// Exchange a refresh token for new tokens; reusing an old one revokes its whole family.
#[utoipa::path(post, path = "/auth/refresh", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = cairn_protocol::api::ErrorBody),
              (status = 429, body = cairn_protocol::api::ErrorBody)))]
pub async fn refresh(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(request): ApiJson<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let now = now_ms();
    state
        .limiter
        .check(
            &format!("ip:{ip}"),
            AUTH_ATTEMPTS_PER_IP_PER_MINUTE,
            MINUTE,
            now,
        )
        .await
        .map_err(ApiError::RateLimited)?;
    let refused =
        || ApiError::Unauthorized("invalid or expired refresh token; log in again".to_owned());
    let hash = auth::refresh_token_hash(&request.refresh_token.0);
    let Some(row) = db::refresh_by_hash(&state.db, &hash).await? else {
        audit(&state, None, "-", &ip, "refresh", "unknown token").await;
        return Err(refused());
    };
    let token_state = TokenState {
        expires_at: row.expires_at,
        used: row.used_at.is_some(),
        revoked: row.revoked_at.is_some(),
    };
    let decision = match auth::rotate(token_state, now) {
        Rotation::Rotate if !db::mark_refresh_used(&state.db, row.id, now).await? => {
            Rotation::Reuse
        }
        decision => decision,
    };
    match decision {
        Rotation::Rotate => {
            let user = db::user_by_id(&state.db, row.user_id)
                .await?
                .ok_or_else(refused)?;
            audit(&state, Some(user.id), &user.username, &ip, "refresh", "ok").await;
            issue_tokens(&state, user.id, &user.username, &row.family, now)
                .await
                .map(Json)
        }
        Rotation::Reuse => {
            let revoked = db::revoke_family(&state.db, &row.family, now).await?;
            tracing::warn!(
                user_id = row.user_id,
                revoked,
                "refresh token reused; family revoked"
            );
            audit(
                &state,
                Some(row.user_id),
                "-",
                &ip,
                "refresh",
                "token reuse: family revoked",
            )
            .await;
            Err(refused())
        }
        Rotation::Refuse => {
            audit(
                &state,
                Some(row.user_id),
                "-",
                &ip,
                "refresh",
                "revoked or expired",
            )
            .await;
            Err(refused())
        }
    }
}

/// Revoke a refresh token (and its family). Idempotent.
#[utoipa::path(post, path = "/auth/logout", request_body = RefreshRequest,
    responses((status = 204), (status = 400, body = cairn_protocol::api::ErrorBody)))]
pub async fn logout(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(request): ApiJson<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    let hash = auth::refresh_token_hash(&request.refresh_token.0);
    if let Some(row) = db::refresh_by_hash(&state.db, &hash).await? {
        db::revoke_family(&state.db, &row.family, now_ms()).await?;
        audit(&state, Some(row.user_id), "-", &ip, "logout", "ok").await;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn issue_tokens(
    state: &AppState,
    user_id: i64,
    name: &str,
    family: &str,
    now: i64,
) -> Result<TokenResponse, ApiError> {
    let now_secs = u64::try_from(now / 1000).unwrap_or(0);
    let access = state
        .keys
        .issue(user_id, name, now_secs, ACCESS_TOKEN_TTL.as_secs())
        .map_err(ApiError::internal)?;
    let refresh = auth::new_refresh_token().map_err(ApiError::internal)?;
    let ttl = i64::try_from(REFRESH_TOKEN_TTL.as_millis()).unwrap_or(i64::MAX);
    db::insert_refresh(
        &state.db,
        user_id,
        family,
        &auth::refresh_token_hash(&refresh),
        now,
        now + ttl,
    )
    .await?;
    Ok(TokenResponse {
        access_token: AccessToken(access),
        refresh_token: RefreshToken(refresh),
        token_type: "bearer".to_owned(),
        expires_in: ACCESS_TOKEN_TTL.as_secs(),
    })
}

async fn hash_on_cpu(state: &AppState, password: String) -> Result<String, ApiError> {
    let _permit = state.cpu.acquire().await.map_err(ApiError::internal)?;
    tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await?
        .map_err(ApiError::internal)
}

/// Appends to the audit log; a failure to audit is logged, not fatal to the request.
pub(crate) async fn audit(
    state: &AppState,
    user_id: Option<i64>,
    actor: &str,
    ip: &str,
    action: &str,
    result: &str,
) {
    audit_target(state, user_id, actor, ip, action, "", result).await;
}

/// [`audit`] with the object acted on (a file id and path, never content).
pub(crate) async fn audit_target(
    state: &AppState,
    user_id: Option<i64>,
    actor: &str,
    ip: &str,
    action: &str,
    target: &str,
    result: &str,
) {
    let record = AuditRecord {
        at: now_ms(),
        user_id,
        actor,
        ip,
        action,
        target,
        result,
    };
    if let Err(err) = db::audit(&state.db, &record).await {
        tracing::error!(error = %err, action, "writing the audit log failed");
    }
}

fn check_username(name: &str) -> Result<(), ApiError> {
    let ok = (3..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(ApiError::BadRequest(
            "invalid_username",
            "a username has 3 to 64 characters: letters, digits, '.', '_' or '-'".to_owned(),
        ));
    }
    Ok(())
}

fn check_email(email: &str) -> Result<(), ApiError> {
    let ok = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.chars().any(char::is_whitespace);
    if !ok {
        return Err(ApiError::BadRequest(
            "invalid_email",
            format!("'{email}' is not an email address"),
        ));
    }
    Ok(())
}
