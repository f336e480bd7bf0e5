-- The dashboard: county accounts, their sessions, the commands the county
-- sent, and a notification on every write so that every dashboard (on any
-- instance) updates at once.

CREATE TABLE users (
    name       text PRIMARY KEY,
    hash       text NOT NULL,                 -- argon2id, PHC string
    role       text NOT NULL CHECK (role IN ('viewer', 'operator')),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sessions (
    token_hash text PRIMARY KEY,              -- SHA-256 of the cookie's token
    name       text NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    csrf       text NOT NULL,
    expires_at timestamptz NOT NULL
);

-- Every command published to a station, by whom; the station's answer is
-- its `cmd_ack` message (body.cmd_msg_id = msg_id).
CREATE TABLE commands (
    msg_id     text PRIMARY KEY,
    county     text NOT NULL,
    station    text NOT NULL,
    cmd        text NOT NULL,                 -- notice, hazard, resend
    payload    jsonb NOT NULL,
    sent_by    text NOT NULL,
    sent_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX commands_by_station ON commands (county, station, sent_at);
CREATE INDEX messages_cmd_ack ON messages ((body->>'cmd_msg_id')) WHERE kind = 'cmd_ack';

CREATE FUNCTION pithead_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pithead_changed', TG_TABLE_NAME);
    RETURN NULL;
END $$;
CREATE TRIGGER messages_notify AFTER INSERT ON messages
    FOR EACH STATEMENT EXECUTE FUNCTION pithead_notify();
CREATE TRIGGER stations_notify AFTER INSERT OR UPDATE ON stations
    FOR EACH STATEMENT EXECUTE FUNCTION pithead_notify();
CREATE TRIGGER commands_notify AFTER INSERT ON commands
    FOR EACH STATEMENT EXECUTE FUNCTION pithead_notify();
