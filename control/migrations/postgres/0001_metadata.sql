-- glance-api's metadata: images, their members, stream nodes and signing-key
-- records. Each row keeps the record glance-api reads and writes as JSON;
-- the columns beside it are what queries select on. `version` counts an
-- image's updates: a write succeeds only over the version it read.
CREATE TABLE images (
    id VARCHAR(36) PRIMARY KEY,
    owner VARCHAR(255),
    version BIGINT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX images_owner ON images (owner);

CREATE TABLE image_members (
    image_id VARCHAR(36) NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    member_id VARCHAR(255) NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (image_id, member_id)
);
CREATE INDEX image_members_member ON image_members (member_id);

CREATE TABLE stream_nodes (
    name VARCHAR(255) PRIMARY KEY,
    record TEXT NOT NULL
);

CREATE TABLE signing_keys (
    id VARCHAR(255) PRIMARY KEY,
    record TEXT NOT NULL
);
