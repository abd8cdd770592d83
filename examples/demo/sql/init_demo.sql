-- Builds the demo database db-test at first start. Deterministic: every value derives from the
-- row number, nothing is random and nothing is downloaded.
PRAGMA journal_mode = OFF;
PRAGMA synchronous = OFF;

CREATE TABLE streams (
    manager_id TEXT NOT NULL,
    stream_id  TEXT NOT NULL,
    PRIMARY KEY (manager_id, stream_id)
);
INSERT INTO streams VALUES ('m1', 's1'), ('m1', 's2'), ('m2', 's3');

CREATE TABLE customers (
    customer_id INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    city        TEXT NOT NULL,
    manager_id  TEXT NOT NULL,
    stream_id   TEXT NOT NULL
);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 600)
INSERT INTO customers
SELECT i,
       CASE (i / 3) % 6
           WHEN 0 THEN 'ООО Ромашка ' || i
           WHEN 1 THEN 'Acme Corp ' || i
           WHEN 2 THEN 'Globex ' || i
           WHEN 3 THEN 'АО Вектор ' || i
           WHEN 4 THEN 'Initech, Inc. ' || i
           ELSE 'Umbrella "Ltd" ' || i
       END,
       CASE i % 5 WHEN 0 THEN 'Москва' WHEN 1 THEN 'Berlin' WHEN 2 THEN 'Казань'
                  WHEN 3 THEN 'Paris' ELSE 'Новосибирск' END,
       CASE i % 3 WHEN 2 THEN 'm2' ELSE 'm1' END,
       CASE i % 3 WHEN 0 THEN 's1' WHEN 1 THEN 's2' ELSE 's3' END
FROM n;

CREATE TABLE orders (
    order_id    INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers (customer_id),
    manager_id  TEXT NOT NULL,
    stream_id   TEXT NOT NULL,
    order_date  TEXT NOT NULL,
    amount      REAL NOT NULL,
    status      TEXT NOT NULL
);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30000)
INSERT INTO orders
SELECT i,
       ((i * 7) % 600) + 1,
       CASE (((i * 7) % 600) + 1) % 3 WHEN 2 THEN 'm2' ELSE 'm1' END,
       CASE (((i * 7) % 600) + 1) % 3 WHEN 0 THEN 's1' WHEN 1 THEN 's2' ELSE 's3' END,
       date('2025-01-01', '+' || (i % 365) || ' days'),
       round(((i * 7919) % 100000) / 100.0 + 1, 2),
       CASE i % 10 WHEN 0 THEN 'cancelled' WHEN 1 THEN 'open' WHEN 2 THEN 'open' ELSE 'shipped' END
FROM n;
CREATE INDEX orders_stream ON orders (manager_id, stream_id);

CREATE TABLE payments (
    payment_id INTEGER PRIMARY KEY,
    order_id   INTEGER NOT NULL REFERENCES orders (order_id),
    method     TEXT NOT NULL,
    paid_at    TEXT NOT NULL,
    amount     REAL NOT NULL,
    review     INTEGER NOT NULL
);
INSERT INTO payments
SELECT order_id, order_id,
       CASE order_id % 4 WHEN 0 THEN 'cash' ELSE 'card' END,
       date(order_date, '+' || (order_id % 20) || ' days'),
       amount,
       0
FROM orders WHERE status = 'shipped';

-- The big table behind g-big: 2,000,000 rows. Dates come from a small calendar table joined
-- by key, which is much cheaper than a date function per row.
CREATE TABLE ledger (
    entry_id  INTEGER PRIMARY KEY,
    account   TEXT NOT NULL,
    booked_at TEXT NOT NULL,
    amount    REAL NOT NULL
);
CREATE TEMP TABLE calendar (k INTEGER PRIMARY KEY, day TEXT NOT NULL);
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 1460)
INSERT INTO calendar SELECT i, date('2022-01-01', '+' || i || ' days') FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000000)
INSERT INTO ledger
SELECT i,
       'ACC-' || (10000 + (i * 31) % 9000),
       c.day,
       ((i * 7919) % 2000001 - 1000000) / 100.0
FROM n JOIN calendar c ON c.k = i % 1461;
DROP TABLE calendar;
