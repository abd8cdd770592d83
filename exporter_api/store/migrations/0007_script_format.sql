-- The file format a run chose for a script (`format` of its selection: csv, csv.gz, xlsx);
-- NULL = the catalog's default ([output] format), as for every run made before this column.
ALTER TABLE run_scripts ADD COLUMN format TEXT;
