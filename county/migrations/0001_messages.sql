-- Every station's messages, once each, as they were sent; the current
-- state of anything is computed from them by (epoch, lane, seq), never by
-- arrival.

-- The stations the county knows (from the configuration's registry) and
-- those it has heard from without knowing them (registered = false).
CREATE TABLE stations (
    county      text NOT NULL,
    station     text NOT NULL,
    name        text,
    mine        text,
    registered  boolean NOT NULL DEFAULT false,
    first_seen  timestamptz,
    last_seen   timestamptz,
    -- From the retained `status`: online or offline, since when, version.
    presence    text,
    presence_at timestamptz,
    version     text,
    PRIMARY KEY (county, station)
);

CREATE TABLE messages (
    msg_id      text PRIMARY KEY,
    county      text NOT NULL,
    station     text NOT NULL,
    epoch       text NOT NULL,
    lane        text NOT NULL,
    seq         bigint NOT NULL,
    kind        text NOT NULL,
    created_at  timestamptz NOT NULL,
    body        jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    -- Whether the station was in the registry when it arrived.
    registered  boolean NOT NULL
);
CREATE INDEX messages_by_lane ON messages (county, station, epoch, lane, seq);
CREATE INDEX messages_by_kind ON messages (county, station, kind);

-- When each epoch of a station began: a newer epoch is a newer database,
-- and its records supersede the older one's.
CREATE VIEW epochs AS
    SELECT county, station, epoch, min(created_at) AS began, count(*) AS messages
    FROM messages GROUP BY county, station, epoch;

-- Missing numbers per (station, epoch, lane): ranges between received
-- numbers, with whether a `gap` record of the station explains them.
CREATE VIEW lane_gaps AS
    WITH numbered AS (
        SELECT county, station, epoch, lane, seq,
               lag(seq, 1, 0::bigint) OVER (PARTITION BY county, station, epoch, lane ORDER BY seq) AS prev
        FROM messages
    ), holes AS (
        SELECT county, station, epoch, lane, prev + 1 AS from_seq, seq - 1 AS to_seq
        FROM numbered WHERE seq > prev + 1
    )
    SELECT h.*, g.msg_id AS explained_by, g.body->>'reason' AS reason
    FROM holes h
    LEFT JOIN LATERAL (
        SELECT msg_id, body FROM messages g
        WHERE g.county = h.county AND g.station = h.station AND g.epoch = h.epoch
          AND g.kind = 'gap' AND g.body->>'lane' = h.lane
          AND (g.body->>'from_seq')::bigint <= h.from_seq
          AND (g.body->>'to_seq')::bigint >= h.to_seq
        LIMIT 1
    ) g ON true;

-- Every alarm's latest transition: the highest (epoch began, seq) of its
-- alarm id, whatever the order the messages came in.
CREATE VIEW alarm_current AS
    SELECT DISTINCT ON (m.county, m.station, m.body->>'alarm_id')
           m.county, m.station, (m.body->>'alarm_id')::bigint AS alarm_id,
           m.body->>'channel' AS channel, m.body->>'level' AS level, m.body->>'event' AS event,
           (m.body->>'value')::double precision AS value, m.body->>'by' AS by,
           (m.body->>'at')::timestamptz AS at, m.epoch, m.seq
    FROM messages m JOIN epochs e USING (county, station, epoch)
    WHERE m.kind = 'alarm'
    ORDER BY m.county, m.station, m.body->>'alarm_id', e.began DESC, m.seq DESC;

-- Every hazard's latest record, by ticket.
CREATE VIEW hazard_current AS
    SELECT DISTINCT ON (m.county, m.station, m.body->>'ticket')
           m.county, m.station, m.body->>'ticket' AS ticket, m.body->>'status' AS status,
           m.body->>'grade' AS grade, m.body->>'category' AS category, m.body AS record, m.epoch, m.seq
    FROM messages m JOIN epochs e USING (county, station, epoch)
    WHERE m.kind = 'hazard'
    ORDER BY m.county, m.station, m.body->>'ticket', e.began DESC, m.seq DESC;

-- Each station's latest head-count (its first part, for the count).
CREATE VIEW headcount_current AS
    SELECT DISTINCT ON (m.county, m.station)
           m.county, m.station, (m.body->>'underground')::bigint AS underground, (m.body->>'overdue')::bigint AS overdue,
           (m.body->>'at')::timestamptz AS at, m.body AS record, m.epoch, m.seq
    FROM messages m JOIN epochs e USING (county, station, epoch)
    WHERE m.kind = 'headcount'
    ORDER BY m.county, m.station, e.began DESC, m.seq DESC;

-- What could not be read, kept with the reason: never dropped, never a
-- crash.
CREATE TABLE rejected (
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic       text NOT NULL,
    reason      text NOT NULL,
    payload     bytea NOT NULL
);
