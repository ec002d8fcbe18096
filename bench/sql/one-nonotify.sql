-- For B_SQL= of bench/postgres-lone-ab.sh (an experiment, not a layout): the one-event
-- function of schema concord without its notification.
\ir one-edit.sql
SELECT pg_temp.edit_one('PERFORM pg_notify\(\$11, p::text\);', '');
