-- glance-api's metadata: images, their members, stream nodes and signing-key
-- records. Each row keeps the record glance-api reads and writes as JSON;
-- the columns beside it are what queries select on. `version` counts an
-- image's updates: a write succeeds only over the version it read. Keys
-- compare byte for byte, trailing spaces included (a NO PAD collation), as
-- in PostgreSQL.
CREATE TABLE images (
    id VARCHAR(36) NOT NULL PRIMARY KEY,
    owner VARCHAR(255) NULL,
    version BIGINT NOT NULL,
    record MEDIUMTEXT NOT NULL,
    INDEX images_owner (owner)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

CREATE TABLE image_members (
    image_id VARCHAR(36) NOT NULL,
    member_id VARCHAR(255) NOT NULL,
    record MEDIUMTEXT NOT NULL,
    PRIMARY KEY (image_id, member_id),
    INDEX image_members_member (member_id),
    CONSTRAINT image_members_image FOREIGN KEY (image_id) REFERENCES images (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

CREATE TABLE stream_nodes (
    name VARCHAR(255) NOT NULL PRIMARY KEY,
    record MEDIUMTEXT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

CREATE TABLE signing_keys (
    id VARCHAR(255) NOT NULL PRIMARY KEY,
    record MEDIUMTEXT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;
