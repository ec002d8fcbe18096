-- For B_SQL= of bench/postgres-lone-ab.sh: format 6's tag index on a format-5 schema (schema concord).
DROP INDEX concord.concord_events_tags;
CREATE INDEX concord_events_tags ON concord.concord_events USING gin (tags) WHERE tags <> '{}';
