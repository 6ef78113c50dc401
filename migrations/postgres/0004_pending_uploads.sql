-- Uploads that no commit references yet count against their owner's quota too, so a client
-- cannot fill the disk with blocks it never commits. An uploaded row (committed = 0) carries the
-- bytes it was charged; users.pending_bytes is the sum of those over the user's folders, kept in
-- the same transactions that add, commit and expire such rows.
-- Keep in step with ../sqlite/0004_pending_uploads.sql.
ALTER TABLE folder_objects ADD COLUMN size BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN pending_bytes BIGINT NOT NULL DEFAULT 0;
-- Uploads never committed are expired by age.
CREATE INDEX folder_objects_uploaded ON folder_objects (created_at) WHERE committed = 0;
