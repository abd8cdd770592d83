-- The file format a run chose for a script (`format` of its selection: csv, csv.gz, xlsx);
-- NULL = the catalog's default ([output] format), as for every run made before this column.
ALTER TABLE run_scripts ADD COLUMN format TEXT;

-- Progress with an ETA: the rows the script's last successful run (same database, manager and
-- stream) exported, and the seconds left at the last progress save; NULL when unknown.
ALTER TABLE run_scripts ADD COLUMN rows_expected BIGINT;
ALTER TABLE run_scripts ADD COLUMN eta_seconds INTEGER;
