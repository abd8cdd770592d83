-- The whole ledger (2,000,000 rows), stamped with the user's manager and stream.
SELECT l.entry_id, :manager_id AS manager_id, :stream_id AS stream_id, l.account, l.booked_at, l.amount
FROM ledger l
ORDER BY l.entry_id;
