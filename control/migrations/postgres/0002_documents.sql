-- Documents kept beside images: tasks and metadata definitions. Each row is
-- one JSON document of a kind, under a key unique within that kind;
-- `version` counts its updates, as for images.
CREATE TABLE documents (
    kind VARCHAR(64) NOT NULL,
    id VARCHAR(255) NOT NULL,
    version BIGINT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
