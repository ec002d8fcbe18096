-- For B_SQL= of bench/postgres-lone-ab.sh (an experiment, not a layout): the one-event
-- function of schema concord reading its position without inserting its mark.
\ir one-edit.sql
SELECT pg_temp.edit_one('INSERT INTO concord.concord_durable \(position\) (SELECT .*?) RETURNING position INTO p;', '\1 INTO p;');
