//! Test databases: a small "rich" one that stresses pg_dump/pg_restore (unicode names, odd
//! types, large objects, partitions, ...) and a big pgbench one for 1 GB tests and benchmarks.

use anyhow::{bail, Context, Result};

use crate::postgres::{quote_ident, quote_literal, run, PgCluster};

/// Roles the rich fixture creates (cluster-wide, so `pg_dumpall --globals-only` has something):
/// `app_owner` owns schema `"Weird-Schema"` and some objects, `app_reader` gets grants.
pub const FIXTURE_ROLES: &[&str] = &["app_owner", "app_reader"];

/// Approximate on-disk size of one pgbench scale unit (tables + indexes), in MB.
const PGBENCH_MB_PER_SCALE: f64 = 16.4;

/// Creates (if missing) and fills database `db` with objects that stress pg_dump/pg_restore.
///
/// Contents: schemas `public`, `"données"` (unicode), `"Weird-Schema"` (owned by role
/// `app_owner`) and `sales`; unicode table and column names, quoted names with `"`, spaces,
/// dots and keywords; bytea with each of the 256 byte values, all of them in one value, empty
/// and NULL; jsonb nested, unicode, escaped and large (toasted); numeric/float specials (NaN,
/// ±Infinity, -0, huge/tiny), infinite and BC timestamps, intervals, ranges, multiranges,
/// network types, xml, arrays (2-D, NULL elements), an enum, a domain, a composite type; an
/// identity column restarted far ahead and a serial; sequences with `setval` far away and one
/// with `is_called = false`; a partitioned table (4 range partitions + default, rows in each);
/// a view, a populated materialized view and one `WITH NO DATA`; ~5000-row table; btree, gin,
/// partial, expression and unique indexes; foreign keys; a plpgsql trigger function with two
/// triggers; a SQL-standard function; row-level security and a policy; grants and default
/// privileges; a table with a dropped column, a zero-column table, an unlogged table, a table
/// with duplicate rows and an empty table; three large objects (one ≥ 1 MiB, one empty, one
/// owned by `app_owner` with a comment) referenced by oid from a table; comments on schema,
/// table, column, function and large object; a database-level setting and comment and a
/// per-role-in-database setting (restored only by `pg_restore --create`).
pub fn create_rich_database(c: &PgCluster, db: &str) -> Result<()> {
    c.ensure_database(db)?;
    let db_ident = quote_ident(db);
    let sql = RICH_SQL.replace("{DB}", &db_ident);
    c.psql(db, &sql)
        .with_context(|| format!("filling rich fixture database {db:?}"))?;
    Ok(())
}

/// Creates (if missing) database `db` and fills it with `pgbench -i` data of about
/// `approx_mb` MB on disk (scale = approx_mb / 16.4, at least 1; 1000 MB ≈ 6.1 M accounts), generated server side.
/// Returns the database size in bytes.
pub fn load_bulk(c: &PgCluster, db: &str, approx_mb: u64) -> Result<u64> {
    c.ensure_database(db)?;
    let scale = ((approx_mb as f64 / PGBENCH_MB_PER_SCALE).round() as u64).max(1);
    // d: drop, t: create tables, G: generate server side, v: vacuum, p: primary keys.
    let out =
        run(c
            .tool("pgbench")
            .args(["-i", "-q", "-I", "dtGvp", "-s", &scale.to_string(), db]))?;
    if !out.status.success() {
        bail!(
            "pgbench -i -s {scale} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let size = c.psql(
        db,
        &format!("SELECT pg_database_size({})", quote_literal(db)),
    )?;
    size.parse()
        .with_context(|| format!("parsing database size {size:?}"))
}

const RICH_SQL: &str = r#####"
SET client_min_messages = warning;
SET TimeZone = 'UTC';

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_owner') THEN
    CREATE ROLE app_owner NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_reader') THEN
    CREATE ROLE app_reader LOGIN CONNECTION LIMIT 5;
  END IF;
END $$;

ALTER DATABASE {DB} SET default_statistics_target = 150;
ALTER ROLE app_reader IN DATABASE {DB} SET work_mem = '16MB';
COMMENT ON DATABASE {DB} IS 'Base de test Lifeboat — «riche»';

CREATE SCHEMA "données";
CREATE SCHEMA "Weird-Schema" AUTHORIZATION app_owner;
CREATE SCHEMA sales;
COMMENT ON SCHEMA "données" IS 'Schéma au nom unicode — ünïcödé ✓ ''quoted''';

-- Types ---------------------------------------------------------------------------------------
CREATE TYPE "données".humeur AS ENUM ('heureux', 'triste', 'très "fâché"', '😀');
CREATE DOMAIN "données".code_postal AS text CHECK (VALUE ~ '^[0-9]{5}$');
CREATE TYPE "données".adresse AS (rue text, ville text, cp "données".code_postal);

-- Functions -----------------------------------------------------------------------------------
CREATE FUNCTION public.ajoute(a integer, b integer) RETURNS integer
  LANGUAGE sql IMMUTABLE RETURN a + b;
COMMENT ON FUNCTION public.ajoute(integer, integer) IS 'SQL-standard body (PG 14+)';

-- Customers: identity, unicode columns, enum, domain, composite, arrays, jsonb ----------------
CREATE TABLE "données".clients (
  id bigint GENERATED ALWAYS AS IDENTITY (START WITH 1000 INCREMENT BY 7) PRIMARY KEY,
  "prénom" text NOT NULL,
  "prénom_normalisé" text,
  "âge" integer CHECK ("âge" >= 0),
  humeur "données".humeur,
  adresse "données".adresse,
  solde numeric(20, 6),
  inscrit timestamptz,
  tags text[],
  grille integer[][],
  profil jsonb
);
COMMENT ON TABLE "données".clients IS 'Clients — table au schéma unicode';
COMMENT ON COLUMN "données".clients."prénom" IS 'Prénom (peut contenir des emoji 🎉)';

CREATE TABLE "données".journal (
  id bigserial PRIMARY KEY,
  client_id bigint NOT NULL,
  action text NOT NULL
);

CREATE FUNCTION "données".normalise_prenom() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
  NEW."prénom_normalisé" := lower(NEW."prénom");
  RETURN NEW;
END
$fn$;

CREATE FUNCTION "données".journalise() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
  INSERT INTO "données".journal (client_id, action) VALUES (NEW.id, TG_OP || ' ' || TG_TABLE_NAME);
  RETURN NULL;
END
$fn$;
COMMENT ON FUNCTION "données".journalise() IS 'Trigger d''audit';

CREATE TRIGGER "avant écriture" BEFORE INSERT OR UPDATE ON "données".clients
  FOR EACH ROW EXECUTE FUNCTION "données".normalise_prenom();
CREATE TRIGGER "après insertion" AFTER INSERT ON "données".clients
  FOR EACH ROW EXECUTE FUNCTION "données".journalise();

INSERT INTO "données".clients ("prénom", "âge", humeur, adresse, solde, inscrit, tags, grille, profil) VALUES
  ('Zoë', 31, 'heureux', ROW('1 rue de l''Église', 'Orléans', '45000'), 1234.5, '2024-02-29 23:59:59.999999+01',
   ARRAY['a', 'b,c', 'd"e', 'f\g', '{h}', NULL, ''], '{{1,2},{3,4}}', '{"langue": "fr", "niveau": {"a": [1, 2, {"b": null}]}}'),
  (E'Ligne 1\nLigne 2\ttab \\ backslash ''apostrophe'' "guillemets"', 0, 'très "fâché"', ROW(NULL, 'Zürich', NULL), -0.000001,
   'infinity', '{}', NULL, '[]'),
  ('Ἀθηνᾶ', NULL, '😀', NULL, 99999999999999.999999, '-infinity', ARRAY[NULL]::text[], '{{NULL,0},{-1,2147483647}}', '"juste une chaîne"'),
  ('שלום', 120, NULL, ROW('', '', NULL), NULL, '1999-12-31 23:59:59+14', ARRAY['עברית', '中文', '🚀👩‍👩‍👧'], NULL, 'null'),
  (U&'e\0301 combiné', 7, 'triste', ROW('北京路 8 号', '北京', '10000'), 0, '2000-01-01 00:00:00+00', NULL, '{}', '{"": "", "\u00e9": "\ud83d\ude00"}'),
  ('', 1, 'heureux', NULL, 42, now() - interval '1 day', ARRAY['x'], '{{7}}', '123.456e-5');

ALTER TABLE "données".clients ALTER COLUMN id RESTART WITH 900000000000;
INSERT INTO "données".clients ("prénom", "âge", humeur, solde, inscrit, profil)
SELECT 'Client ' || g, g % 90, (ARRAY['heureux', 'triste'])[1 + g % 2]::"données".humeur,
       g * 1.000001, '2023-06-01'::timestamptz + g * interval '1 hour 1 second',
       jsonb_build_object('n', g, 'pair', g % 2 = 0)
FROM generate_series(1, 40) g;
UPDATE "données".clients SET "âge" = "âge" + 1 WHERE "prénom" = 'Zoë';

CREATE UNIQUE INDEX clients_prenom_id ON "données".clients (lower("prénom"), id);
CREATE INDEX "clients profil gin" ON "données".clients USING gin (profil jsonb_path_ops);

-- A few thousand events: FK, serial, generated column, interval, float ----------------------
CREATE TABLE "données"."événements" (
  id serial PRIMARY KEY,
  client_id bigint REFERENCES "données".clients (id) ON DELETE SET NULL,
  "type d'événement" text NOT NULL,
  quand timestamptz NOT NULL,
  "durée" interval,
  valeur double precision,
  doublée numeric GENERATED ALWAYS AS (round(valeur::numeric * 2, 3)) STORED,
  payload jsonb
);
INSERT INTO "données"."événements" (client_id, "type d'événement", quand, "durée", valeur, payload)
SELECT CASE WHEN g % 10 = 0 THEN NULL ELSE 1000 + 7 * (g % 6) END,
       (ARRAY['connexion', 'achat', 'déconnexion', 'erreur « grave »'])[1 + g % 4],
       '2024-01-01 00:00:00+00'::timestamptz + g * interval '37 minutes 13.123456 seconds',
       make_interval(0, g % 3, 0, g % 5, g % 24, g % 60, (g % 1000) / 1000.0),
       sin(g) * 1e6,
       jsonb_build_object('n', g, 'é', repeat('x', g % 50), 'arr', jsonb_build_array(g, g * 2, NULL, g % 2 = 0))
FROM generate_series(1, 5000) g;
CREATE INDEX "idx quand partiel" ON "données"."événements" (quand) WHERE valeur > 0;
CREATE INDEX evenements_n ON "données"."événements" (((payload ->> 'n')::int));

-- Materialized views ----------------------------------------------------------------------------
CREATE MATERIALIZED VIEW "données".stats_clients AS
  SELECT humeur, count(*) AS n, sum(solde) AS total FROM "données".clients GROUP BY humeur;
CREATE UNIQUE INDEX ON "données".stats_clients (humeur);
CREATE MATERIALIZED VIEW "données".jamais_rempli AS SELECT 1 AS x WITH NO DATA;

-- bytea -----------------------------------------------------------------------------------------
CREATE TABLE public.blobs (id integer PRIMARY KEY, data bytea, note text);
INSERT INTO public.blobs SELECT b, set_byte('\x00'::bytea, 0, b), 'byte ' || b FROM generate_series(0, 255) b;
INSERT INTO public.blobs VALUES
  (1000, (SELECT string_agg(set_byte('\x00'::bytea, 0, b), ''::bytea ORDER BY b) FROM generate_series(0, 255) b), 'all 256 values'),
  (1001, NULL, 'NULL'),
  (1002, '\x'::bytea, 'empty'),
  (1003, (SELECT string_agg(sha256(int4send(g)), ''::bytea ORDER BY g) FROM generate_series(1, 20000) g), '640 kB, toasted');

-- jsonb, large and odd ----------------------------------------------------------------------------
CREATE TABLE public.documents (id integer PRIMARY KEY, doc jsonb NOT NULL, body text);
INSERT INTO public.documents VALUES
  (1, jsonb_build_object('niveau1', jsonb_build_object('niveau2', jsonb_build_object('niveau3',
       jsonb_build_array(1, 2.5, 'trois', NULL, true, jsonb_build_object('ключ', 'значение', '🔑', '🗝')))))
   , 'court'),
  (2, (SELECT jsonb_object_agg('clé_' || g, jsonb_build_object('v', g, 'texte', md5(g::text), 'ü', ARRAY[g, -g]))
       FROM generate_series(1, 20000) g),
   repeat('Lorem ipsum dolor sit amet ✓ ', 40000)),
  (3, '{"escapes": "quote \" backslash \\ newline \n tab \t unicode \u00e9 \ud83d\ude00 ctrl \u0001",
        "num": 1.0000000000000000000001, "big": 123456789012345678901234567890, "neg0": -0, "exp": 1e300,
        "vide": {}, "liste vide": []}', NULL);
ALTER TABLE public.documents ENABLE ROW LEVEL SECURITY;
CREATE POLICY lecture ON public.documents FOR SELECT TO app_reader USING (id > 0);

-- Scalar types and their special values -----------------------------------------------------
CREATE TABLE public."Numériques" (
  id integer PRIMARY KEY,
  n numeric, f8 double precision, f4 real, i2 smallint, i8 bigint,
  ts timestamp, tstz timestamptz, d date, t time, ttz timetz, iv interval,
  b boolean, u uuid, ip inet, net cidr, mac macaddr, bits bit varying(20),
  pt point, rng int4range, mrng int4multirange, tsr tstzrange, x xml, ch char(5), vc varchar(10)
);
INSERT INTO public."Numériques" VALUES
  (1, 'NaN', 'NaN', 'NaN', -32768, -9223372036854775808, 'infinity', 'infinity', 'infinity', '24:00:00', '23:59:59.999999+15:59', '-178000000 years',
   true, '00000000-0000-0000-0000-000000000000', '::ffff:1.2.3.4/128', '10.0.0.0/8', '08:00:2b:01:02:03', B'1010', '(1.5,-2)', '[1,10)', '{[1,3), [5,7)}', '[2024-01-01 00:00+00,infinity)', '<a b="c">é &amp; <!-- c --></a>', 'ab', 'ç'),
  (2, 'Infinity', 'Infinity', '-Infinity', 32767, 9223372036854775807, '-infinity', '-infinity', '-infinity', '00:00:00', '00:00:00-15:59', '1 mon -1 day 00:00:00.000001',
   false, 'ffffffff-ffff-ffff-ffff-ffffffffffff', '2001:db8::1', '2001:db8::/32', 'ff:ff:ff:ff:ff:ff', B'', '(0,0)', 'empty', '{}', 'empty', 'texte brut', '     ', ''),
  (3, '-Infinity', '-0', '-0', 0, 0, '4713-01-01 00:00:00 BC', '4713-01-01 00:00:00+00 BC', '4713-01-01 BC', '12:34:56.789', '12:00:00+00', '0',
   NULL, NULL, '0.0.0.0/0', '0.0.0.0/0', NULL, B'11111111111111111111', NULL, '(,5]', '{(,5], [10,)}', NULL, NULL, NULL, NULL),
  (4, '123456789012345678901234567890.123456789012345678901234567890', 4.9e-324, 1.17549435e-38, 1, 1,
   '294276-12-31 23:59:59.999999', '294276-12-31 23:59:59.999999+00', '5874897-12-31', '00:00:00.000001', '24:00:00+00', '-1 days +00:00:00.000001',
   true, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '192.168.0.1/24', '192.168.0.0/24', '00:00:00:00:00:00', NULL, '(1e300,-1e-300)', '[-2147483648,2147483647)', NULL, '(,)', NULL, 'abcde', 'dix chars!'),
  (5, '1e1000', 1.7976931348623157e308, 3.4028235e38, -1, -1,
   '2000-01-01 00:00:00.000001', '2024-03-31 02:30:00 Europe/Paris', '2000-02-29', NULL, NULL, '1 year 2 mons 3 days 04:05:06.789',
   false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (6, '-0.000000000000000000000000000001', 0.1, 0.1, 2, 2, NULL, NULL, NULL, NULL, NULL, NULL,
   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);

-- Awkward tables ------------------------------------------------------------------------------
CREATE TABLE public.evolution (a integer, b text, c integer);
INSERT INTO public.evolution VALUES (1, 'sera supprimée', 10), (2, 'aussi', 20);
ALTER TABLE public.evolution DROP COLUMN b;
INSERT INTO public.evolution VALUES (3, 30);

CREATE TABLE public.sans_colonnes ();
INSERT INTO public.sans_colonnes DEFAULT VALUES;
INSERT INTO public.sans_colonnes DEFAULT VALUES;
INSERT INTO public.sans_colonnes DEFAULT VALUES;

CREATE TABLE public.doublons (a integer, b text);
INSERT INTO public.doublons VALUES (1, 'x'), (1, 'x'), (1, 'x'), (2, NULL), (2, NULL);

CREATE TABLE public.vide (id integer PRIMARY KEY, x text);

CREATE UNLOGGED TABLE public.cache (k text PRIMARY KEY, v jsonb);
INSERT INTO public.cache SELECT 'clé ' || g, to_jsonb(g) FROM generate_series(1, 50) g;

-- Quoted, mixed-case, keyword names in a schema owned by another role -----------------------
CREATE TABLE "Weird-Schema"."Table ""Quoted"" Name" (
  "ID" integer PRIMARY KEY,
  "select" text,
  "Column.With.Dots" text,
  "MixedCase" integer,
  "emoji 🎉" text,
  "  spaces  " text
);
ALTER TABLE "Weird-Schema"."Table ""Quoted"" Name" OWNER TO app_owner;
INSERT INTO "Weird-Schema"."Table ""Quoted"" Name"
SELECT g, 'select ' || g, 'a.b.c', g * g, repeat('🎉', g % 5), '  ' || g || '  ' FROM generate_series(1, 100) g;
CREATE TABLE "Weird-Schema".enfant (
  id integer PRIMARY KEY,
  "parentID" integer NOT NULL REFERENCES "Weird-Schema"."Table ""Quoted"" Name" ("ID") ON DELETE CASCADE
);
INSERT INTO "Weird-Schema".enfant SELECT g, 1 + g % 100 FROM generate_series(1, 300) g;
CREATE INDEX "Index ""Bizarre""" ON "Weird-Schema".enfant ("parentID");
CREATE SEQUENCE "Weird-Schema"."Séquence Non Appelée";
SELECT setval('"Weird-Schema"."Séquence Non Appelée"', 42, false);
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA "Weird-Schema" GRANT SELECT ON TABLES TO app_reader;

-- Sequences -----------------------------------------------------------------------------------
CREATE SEQUENCE public.facture_seq AS bigint INCREMENT BY -3
  MINVALUE -9223372036854775808 MAXVALUE 1000000 START 1000000 CACHE 10 CYCLE;
SELECT setval('public.facture_seq', -4611686018427387904, true);
CREATE SEQUENCE public.petite_seq AS smallint;
SELECT nextval('public.petite_seq') FROM generate_series(1, 3);

-- Partitioned table ---------------------------------------------------------------------------
CREATE TABLE sales.commandes (
  id bigint GENERATED BY DEFAULT AS IDENTITY,
  "passée" timestamptz NOT NULL,
  montant numeric(12, 2),
  client text,
  PRIMARY KEY (id, "passée")
) PARTITION BY RANGE ("passée");
CREATE TABLE sales.commandes_2023 PARTITION OF sales.commandes FOR VALUES FROM ('2023-01-01 00:00+00') TO ('2024-01-01 00:00+00');
CREATE TABLE sales.commandes_2024 PARTITION OF sales.commandes FOR VALUES FROM ('2024-01-01 00:00+00') TO ('2025-01-01 00:00+00');
CREATE TABLE sales."commandes_2025 ☀" PARTITION OF sales.commandes FOR VALUES FROM ('2025-01-01 00:00+00') TO ('2026-01-01 00:00+00');
CREATE TABLE sales."commandes_défaut" PARTITION OF sales.commandes DEFAULT;
INSERT INTO sales.commandes ("passée", montant, client)
SELECT '2022-07-01 00:00+00'::timestamptz + g * interval '1 day 3 hours', round((g * 3.7)::numeric, 2), 'client ' || (g % 17)
FROM generate_series(1, 1200) g;
CREATE INDEX ON sales.commandes (client);
CREATE VIEW sales."résumé mensuel" AS
  SELECT date_trunc('month', "passée", 'UTC') AS mois, count(*) AS n, sum(montant) AS total
  FROM sales.commandes GROUP BY 1;
COMMENT ON VIEW sales."résumé mensuel" IS 'Vue sur la table partitionnée';

-- Large objects, referenced by oid from a table ---------------------------------------------
CREATE TABLE public."pièces_jointes" (nom text PRIMARY KEY, contenu oid NOT NULL);
DO $$
DECLARE o oid;
BEGIN
  INSERT INTO public."pièces_jointes" VALUES
    ('bonjour.txt', lo_from_bytea(0, convert_to('Bonjour, objet volumineux ✓', 'UTF8'))),
    ('vide.bin', lo_from_bytea(0, '\x'::bytea)),
    ('gros.bin', lo_from_bytea(0, (SELECT string_agg(sha256(int4send(g)), ''::bytea ORDER BY g)
                                   FROM generate_series(1, 40000) g)));
  SELECT contenu INTO o FROM public."pièces_jointes" WHERE nom = 'bonjour.txt';
  EXECUTE format('COMMENT ON LARGE OBJECT %s IS %L', o, 'Un commentaire sur un « large object »');
  EXECUTE format('ALTER LARGE OBJECT %s OWNER TO app_owner', o);
  EXECUTE format('GRANT SELECT ON LARGE OBJECT %s TO app_reader', o);
END $$;

-- Grants ------------------------------------------------------------------------------------------
GRANT USAGE ON SCHEMA "données", sales TO app_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA "données" TO app_reader;
GRANT SELECT (id, montant) ON sales.commandes TO app_reader;
GRANT EXECUTE ON FUNCTION public.ajoute(integer, integer) TO app_reader;

ANALYZE;
"#####;
