-- Canopy's PostgreSQL store, format 1. Records are kept as the JSON text the embedded store
-- keeps (exact: field order and number text as written); the columns beside them are what
-- queries select, filter and order on. Times are milliseconds since the Unix epoch; `day` is
-- the day number since the epoch (UTC) a row is stored under, the partition key of the log.

CREATE TABLE meta (
    name  text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE shops (
    id         text PRIMARY KEY,
    deleted_at bigint,
    record     text NOT NULL
);

CREATE TABLE tokens (
    hash   text PRIMARY KEY,
    shop   text NOT NULL,
    id     uuid NOT NULL,
    record text NOT NULL
);
CREATE UNIQUE INDEX tokens_by_shop ON tokens (shop, id);

CREATE TABLE integrations (
    id     uuid PRIMARY KEY,
    shop   text NOT NULL,
    record text NOT NULL,
    -- The rate limit's state (GCRA's theoretical arrival time, microseconds), shared by every node.
    pace   bigint
);
CREATE INDEX integrations_by_shop ON integrations (shop, id);

-- The log: partitioned by day, old days dropped whole by the purge (open work is moved out of
-- a day before it is dropped).
CREATE TABLE events (
    id          uuid    NOT NULL,
    day         integer NOT NULL,
    shop        text    NOT NULL,
    received_at bigint  NOT NULL,
    record      text    NOT NULL,
    json        text    NOT NULL
) PARTITION BY RANGE (day);
CREATE INDEX events_by_id ON events (id);

CREATE TABLE deliveries (
    id             uuid    NOT NULL,
    day            integer NOT NULL,
    shop           text    NOT NULL,
    event_id       uuid    NOT NULL,
    integration_id uuid    NOT NULL,
    event          text    NOT NULL,
    status         text    NOT NULL,
    customer_email text,
    customer_name  text,
    record         text    NOT NULL
) PARTITION BY RANGE (day);
CREATE INDEX deliveries_by_id ON deliveries (id);
CREATE INDEX deliveries_by_shop ON deliveries (shop, id);
CREATE INDEX deliveries_by_integration ON deliveries (integration_id, id);
CREATE INDEX deliveries_by_status ON deliveries (shop, status, id);
CREATE INDEX deliveries_by_event ON deliveries (shop, event, id);
CREATE INDEX deliveries_by_email ON deliveries (shop, lower(btrim(customer_email)), id);
CREATE INDEX deliveries_by_name ON deliveries (shop, lower(btrim(customer_name)), id);

CREATE TABLE attempts (
    delivery_id uuid    NOT NULL,
    number      integer NOT NULL,
    day         integer NOT NULL,
    record      text    NOT NULL
) PARTITION BY RANGE (day);
CREATE INDEX attempts_by_delivery ON attempts (delivery_id, number);

-- Open work only (queued, held by a worker, or paused): small, not partitioned, and what the
-- claim reads. `due_at` is where it sits in its integration's queue (the lease's end while a
-- worker holds it); NULL while paused.
CREATE TABLE queue (
    delivery_id    uuid    PRIMARY KEY,
    day            integer NOT NULL,
    shop           text    NOT NULL,
    integration_id uuid    NOT NULL,
    due_at         bigint,
    lease_until    bigint
);
CREATE INDEX queue_by_integration ON queue (integration_id, due_at, delivery_id) WHERE due_at IS NOT NULL;
CREATE INDEX queue_by_due ON queue (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX queue_paused ON queue (integration_id) WHERE due_at IS NULL;
CREATE INDEX queue_by_day ON queue (day);

CREATE TABLE stats (
    integration_id uuid   NOT NULL,
    bucket         bigint NOT NULL,
    record         text   NOT NULL,
    PRIMARY KEY (integration_id, bucket)
);

CREATE TABLE last_outcomes (
    integration_id uuid PRIMARY KEY,
    record         text NOT NULL
);

CREATE TABLE components (
    digest text PRIMARY KEY,
    bytes  bytea NOT NULL
);

CREATE TABLE plugin_versions (
    plugin text    NOT NULL,
    number integer NOT NULL,
    digest text    NOT NULL,
    record text    NOT NULL,
    PRIMARY KEY (plugin, number)
);

CREATE TABLE plugins (
    plugin  text PRIMARY KEY,
    active  integer,
    removed boolean NOT NULL DEFAULT false
);
