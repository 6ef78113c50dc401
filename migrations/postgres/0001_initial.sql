-- Cairn metadata, PostgreSQL flavour. Keep in step with ../sqlite/0001_initial.sql: the same
-- tables, columns and indexes; only types and identity columns differ.
-- Times are Unix milliseconds (BIGINT); flags are 0/1 BIGINTs (portable through sqlx::Any).

CREATE TABLE users (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      TEXT    NOT NULL UNIQUE,
    email         TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    quota_bytes   BIGINT  NOT NULL,
    used_bytes    BIGINT  NOT NULL DEFAULT 0,
    created_at    BIGINT  NOT NULL
);

CREATE TABLE refresh_tokens (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     BIGINT  NOT NULL REFERENCES users (id),
    family      TEXT    NOT NULL,
    token_hash  TEXT    NOT NULL UNIQUE,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL,
    used_at     BIGINT,
    revoked_at  BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);

CREATE TABLE folders (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id    BIGINT  NOT NULL REFERENCES users (id),
    name        TEXT    NOT NULL,
    head_seq    BIGINT  NOT NULL,
    head_root   TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    UNIQUE (owner_id, name)
);

CREATE TABLE commits (
    folder_id   BIGINT  NOT NULL REFERENCES folders (id),
    seq         BIGINT  NOT NULL,
    root        TEXT    NOT NULL,
    parent_seq  BIGINT  NOT NULL,
    device      TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    files       BIGINT  NOT NULL,
    bytes       BIGINT  NOT NULL,
    PRIMARY KEY (folder_id, seq)
);

CREATE TABLE files (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    folder_id       BIGINT  NOT NULL REFERENCES folders (id),
    path            TEXT    NOT NULL,
    version         BIGINT  NOT NULL,
    size            BIGINT  NOT NULL,
    hash            TEXT    NOT NULL,
    modified_at     BIGINT  NOT NULL,
    deleted         BIGINT  NOT NULL,
    UNIQUE (folder_id, path)
);
CREATE INDEX files_listing ON files (folder_id, deleted, path);

CREATE TABLE file_versions (
    file_id     BIGINT  NOT NULL REFERENCES files (id),
    version     BIGINT  NOT NULL,
    folder_id   BIGINT  NOT NULL,
    seq         BIGINT  NOT NULL,
    size        BIGINT  NOT NULL,
    hash        TEXT    NOT NULL,
    deleted     BIGINT  NOT NULL,
    device      TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    PRIMARY KEY (file_id, version)
);
CREATE INDEX file_versions_changes ON file_versions (folder_id, seq);

CREATE TABLE clients (
    user_id     BIGINT  NOT NULL REFERENCES users (id),
    client_id   TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    last_seen   BIGINT  NOT NULL,
    PRIMARY KEY (user_id, client_id)
);

CREATE TABLE audit_log (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT  NOT NULL,
    user_id     BIGINT,
    actor       TEXT    NOT NULL,
    ip          TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    target      TEXT    NOT NULL,
    result      TEXT    NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
