-- Included by the bench/sql/one-*.sql experiments (B_SQL= of bench/postgres-lone-ab.sh):
-- pg_temp.edit_one(pattern, replacement) recreates the one-event function of schema concord
-- with regexp_replace(its definition, pattern, replacement), and fails when nothing changed.
CREATE FUNCTION pg_temp.edit_one(pattern text, replacement text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE f oid; def text; new text;
BEGIN
  SELECT p.oid INTO f FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
   WHERE n.nspname = 'concord' AND p.proname LIKE 'concord_append_one_%';
  def := pg_get_functiondef(f);
  new := regexp_replace(def, pattern, replacement);
  IF new = def THEN RAISE EXCEPTION 'experiment changed nothing'; END IF;
  EXECUTE new;
END $$;
