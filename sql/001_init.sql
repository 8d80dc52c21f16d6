-- 001: users, rooms, memberships, messages and read positions.
-- Applied in one transaction by `parleyd --migrate`; recorded in schema_migrations.

CREATE TABLE users (
    id          text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rooms (
    id          text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE room_members (
    room_id     text NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id     text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    joined_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_members_by_user ON room_members (user_id);

-- One row per room message. seq is assigned by Redis (gap-free per room),
-- id is the server's time-ordered 64-bit id, body the text as sent.
-- No foreign key to rooms: the write path is batched and must not depend on
-- membership rows existing.
CREATE TABLE messages (
    id          bigint PRIMARY KEY,
    room_id     text   NOT NULL,
    seq         bigint NOT NULL,
    sender      text   NOT NULL,
    cid         text,
    body        text   NOT NULL,
    ts_ms       bigint NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT messages_room_seq UNIQUE (room_id, seq)
);
-- Idempotent sends: one message per (sender, client id).
CREATE UNIQUE INDEX messages_sender_cid ON messages (sender, cid) WHERE cid IS NOT NULL;

-- Per user and room: how far the user has read (read receipts).
CREATE TABLE message_status (
    room_id       text   NOT NULL,
    user_id       text   NOT NULL,
    last_read_seq bigint NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, user_id)
);
