-- For B_SQL= of bench/postgres-lone-ab.sh (an experiment, not a layout): the one-event function of schema concord edited in place (nonotify).
DO $$
DECLARE f oid; def text; new text;
BEGIN
  SELECT p.oid INTO f FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
   WHERE n.nspname = 'concord' AND p.proname LIKE 'concord_append_one_%';
  def := pg_get_functiondef(f);
  new := replace(def, 'PERFORM pg_notify($11, p::text);', '');
  IF new = def THEN RAISE EXCEPTION 'experiment changed nothing'; END IF;
  EXECUTE new;
END $$;
