-- What the quarterly light and the station page need beyond the messages:
-- the backlog each station reports, its presence over time, its channels'
-- minutes, the union's own assessment, and gaps the station answered
-- `gone`.

-- The backlog a station last reported in its retained `online` status.
ALTER TABLE stations ADD COLUMN backlog jsonb;
ALTER TABLE stations ADD COLUMN backlog_at timestamptz;

-- Every change of a station's presence, as the county saw it (the time it
-- arrived: a last will carries the time of the connection it was left
-- with, not of its loss). A status that repeats the last state is not a
-- change; two instances may both record one, which sums the same.
CREATE TABLE presence_log (
    county  text NOT NULL,
    station text NOT NULL,
    state   text NOT NULL CHECK (state IN ('online', 'offline')),
    at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX presence_log_by_station ON presence_log (county, station, at);

-- Every minute of every channel from the summaries, once: for the trend
-- charts and the sensor downtime of the light. Filled from the messages as
-- they are stored (one statement per batch).
CREATE TABLE channel_minutes (
    county  text NOT NULL,
    station text NOT NULL,
    channel text NOT NULL,
    minute  timestamptz NOT NULL,
    min     double precision,
    max     double precision,
    mean    double precision,      -- NULL: not one good reading that minute
    count   integer NOT NULL,
    faults  integer NOT NULL,
    PRIMARY KEY (county, station, channel, minute)
);
CREATE INDEX channel_minutes_down ON channel_minutes (county, station, minute) WHERE mean IS NULL;

CREATE FUNCTION pithead_channel_minutes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO channel_minutes (county, station, channel, minute, min, max, mean, count, faults)
    SELECT n.county, n.station, ch->>'channel', (mi->>'minute')::timestamptz,
           (mi->>'min')::double precision, (mi->>'max')::double precision, (mi->>'mean')::double precision,
           coalesce((mi->>'count')::integer, 0), coalesce((mi->>'faults')::integer, 0)
    FROM new_messages n,
         jsonb_array_elements(CASE WHEN jsonb_typeof(n.body->'channels') = 'array' THEN n.body->'channels' ELSE '[]' END) ch,
         jsonb_array_elements(CASE WHEN jsonb_typeof(ch->'minutes') = 'array' THEN ch->'minutes' ELSE '[]' END) mi
    WHERE n.kind = 'summary' AND ch->>'channel' IS NOT NULL AND mi->>'minute' IS NOT NULL
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER messages_channel_minutes AFTER INSERT ON messages
    REFERENCING NEW TABLE AS new_messages
    FOR EACH STATEMENT EXECUTE FUNCTION pithead_channel_minutes();

-- The union's own assessment of a station's quarter, beside the computed
-- light; the latest one counts, every one is kept.
CREATE TABLE light_overrides (
    id      bigserial PRIMARY KEY,
    county  text NOT NULL,
    station text NOT NULL,
    quarter text NOT NULL CHECK (quarter ~ '^[0-9]{4}-Q[1-4]$'),
    light   text NOT NULL CHECK (light IN ('green', 'yellow', 'red')),
    note    text NOT NULL CHECK (length(note) BETWEEN 1 AND 2000),
    by_name text NOT NULL,
    at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX light_overrides_by_quarter ON light_overrides (quarter, county, station, at);
CREATE TRIGGER light_overrides_notify AFTER INSERT ON light_overrides
    FOR EACH STATEMENT EXECUTE FUNCTION pithead_notify();

-- Missing numbers are explained by the station's `gap` record, or by its
-- answer `gone` to the county's `cmd/resend` for that epoch and lane.
CREATE OR REPLACE VIEW lane_gaps AS
    WITH numbered AS (
        SELECT county, station, epoch, lane, seq,
               lag(seq, 1, 0::bigint) OVER (PARTITION BY county, station, epoch, lane ORDER BY seq) AS prev
        FROM messages
    ), holes AS (
        SELECT county, station, epoch, lane, prev + 1 AS from_seq, seq - 1 AS to_seq
        FROM numbered WHERE seq > prev + 1
    )
    SELECT h.*, coalesce(g.msg_id, a.msg_id) AS explained_by, coalesce(g.body->>'reason', a.reason) AS reason
    FROM holes h
    LEFT JOIN LATERAL (
        SELECT msg_id, body FROM messages g
        WHERE g.county = h.county AND g.station = h.station AND g.epoch = h.epoch
          AND g.kind = 'gap' AND g.body->>'lane' = h.lane
          AND (g.body->>'from_seq')::bigint <= h.from_seq
          AND (g.body->>'to_seq')::bigint >= h.to_seq
        LIMIT 1
    ) g ON true
    LEFT JOIN LATERAL (
        SELECT m.msg_id, 'gone'::text AS reason
        FROM commands c
        JOIN messages m ON m.kind = 'cmd_ack' AND m.body->>'cmd_msg_id' = c.msg_id
        CROSS JOIN LATERAL jsonb_array_elements(
            CASE WHEN jsonb_typeof(m.body->'gone') = 'array' THEN m.body->'gone' ELSE '[]' END) r
        WHERE g.msg_id IS NULL AND c.cmd = 'resend'
          AND c.county = h.county AND c.station = h.station
          AND c.payload->>'epoch' = h.epoch AND c.payload->>'lane' = h.lane
          AND (r->>0)::bigint <= h.from_seq AND (r->>1)::bigint >= h.to_seq
        LIMIT 1
    ) a ON true;
