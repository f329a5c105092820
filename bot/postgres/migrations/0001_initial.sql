-- The transactional state of a replicated bot (bot/postgres/store.py): the same rows and field
-- names as the embedded LanceDB logs (bot/store.py), plus what replicas need to agree on.

CREATE TABLE interactions (
    interaction_id text PRIMARY KEY,
    created_at timestamptz NOT NULL,
    question text,
    history jsonb,
    asker text,
    channel text,
    thread_ts text,
    team_id text,
    slack jsonb,
    retrieved jsonb,
    answer text,
    citations jsonb,
    confidence double precision,
    decision text,
    reasons jsonb,
    generator text,
    model text,
    fallback_reason text,
    index_version bigint,
    search_query text,
    latency_ms jsonb,
    input_tokens bigint,
    output_tokens bigint,
    cache_creation_input_tokens bigint,
    cache_read_input_tokens bigint,
    cost_usd double precision,
    signals jsonb
);
CREATE INDEX interactions_created_at ON interactions (created_at);

CREATE TABLE feedback (
    key text PRIMARY KEY,
    interaction_id text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('vote', 'escalation')),
    "user" text,
    rating text CHECK (rating IN ('up', 'down')),
    comment text,
    status text CHECK (status IN ('pending', 'failed', 'open', 'claimed', 'resolved')),
    claimed_by text,
    resolved_by text,
    human_answer text,
    trigger text,
    escalation_channel text,
    escalation_ts text,
    permalink text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX feedback_updated_at ON feedback (updated_at);

-- One-way escalation transitions, the same rule as bot.store.escalation_transition_allowed.
CREATE FUNCTION escalation_rank(status text) RETURNS int IMMUTABLE LANGUAGE sql AS $$
    SELECT CASE status WHEN 'pending' THEN 0 WHEN 'failed' THEN 0 WHEN 'open' THEN 1
                       WHEN 'claimed' THEN 2 WHEN 'resolved' THEN 3 ELSE -1 END
$$;
CREATE FUNCTION escalation_transition_allowed(old text, new text) RETURNS boolean IMMUTABLE LANGUAGE sql AS $$
    SELECT old IS NULL
        OR (old, new) IN (('pending', 'failed'), ('failed', 'pending'))
        OR escalation_rank(new) > escalation_rank(old)
$$;

-- Replicas alive: each one upserts its row every few seconds. A received question whose owner
-- stopped beating may be claimed by another replica (a Slack retry, or recovery on start).
CREATE TABLE replicas (
    replica_id text PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    seen_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE received (
    key text PRIMARY KEY,
    channel text,
    message_ts text,
    thread_ts text,
    "user" text,
    team_id text,
    surface text,
    ask jsonb,
    status text NOT NULL CHECK (status IN ('received', 'done', 'unfinished', 'apologised')),
    owner text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX received_open ON received (created_at) WHERE status IN ('received', 'unfinished');

-- Per-user answer starts, booked by every replica: the shared per-user rate limit.
CREATE TABLE rate_bookings (
    "user" text NOT NULL,
    starts_at timestamptz NOT NULL
);
CREATE INDEX rate_bookings_user ON rate_bookings ("user", starts_at);

-- Answer slots shared by all replicas: the global cap on answers in flight. A slot held by a
-- replica that stopped beating is free again.
CREATE TABLE answer_slots (
    slot int PRIMARY KEY,
    owner text,
    taken_at timestamptz
);

-- Scheduled jobs that must run once per period whichever replica leads (the weekly digest).
CREATE TABLE job_runs (
    job text NOT NULL,
    period text NOT NULL,
    replica_id text,
    started_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job, period)
);
