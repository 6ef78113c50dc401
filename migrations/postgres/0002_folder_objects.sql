-- Which blocks and tree nodes each folder may read over the sync protocol (a block hash is not a
-- capability). A row appears when a client of the folder uploads the block (committed = 0) or when
-- a commit of the folder references it (committed = 1: the node's whole subtree was verified).
-- Keep in step with ../sqlite/0002_folder_objects.sql.
CREATE TABLE folder_objects (
    folder_id   BIGINT  NOT NULL REFERENCES folders (id),
    id          TEXT    NOT NULL,
    committed   BIGINT  NOT NULL,
    created_at  BIGINT  NOT NULL,
    PRIMARY KEY (folder_id, id)
);
