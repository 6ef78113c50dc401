-- Objects by id across folders: a block or node new to the store (collected, then uploaded
-- again by any folder) must mark every folder's committed row of it as restored, not only the
-- uploading folder's, or another folder's commit would stop at a node whose subtree is gone.
-- Keep in step with ../postgres/0006_folder_objects_by_id.sql.
CREATE INDEX folder_objects_id ON folder_objects (id);
