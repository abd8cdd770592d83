-- The media type a file is served with, charset included (`text/csv; charset=windows-1251` for
-- a CSV of a cp1251 output profile): fixed when the file is written, so a download after a
-- restart, a takeover or a catalog change still says how its bytes are encoded. NULL for files
-- recorded before this column: served by their name's format, CSV in `[output] encoding`.
ALTER TABLE run_files ADD COLUMN media_type TEXT;
