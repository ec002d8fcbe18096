-- For B_SQL= of bench/postgres-lone-ab.sh (an experiment, not a layout): the one-event
-- function of schema concord without its look-up of the event's id.
\ir one-edit.sql
SELECT pg_temp.edit_one('AND NOT EXISTS \(SELECT 1 FROM concord.concord_events e WHERE e.stream = \$1::text AND e.event_id = \$4::uuid\)', '');
