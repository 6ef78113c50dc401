-- Every folder gets a random identity, published in GET /folders. A client binds a sync
-- root's state to it, so a state made against one folder (another server, another user, a
-- folder deleted and created again under the same name) is never taken as the merge base of
-- another: that would read the other folder's missing files as deletions.
-- Keep in step with ../sqlite/0005_folder_uid.sql.
ALTER TABLE folders ADD COLUMN uid TEXT NOT NULL DEFAULT '';
UPDATE folders SET uid = replace(gen_random_uuid()::text, '-', '') WHERE uid = '';
CREATE UNIQUE INDEX folders_uid ON folders (uid);
