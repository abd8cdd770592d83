-- Orders, variant 2: shipped orders of the user's manager and stream.
SELECT o.order_id, c.name AS customer, o.order_date, c.city, o.amount, o.status
FROM orders o
JOIN customers c ON c.customer_id = o.customer_id
WHERE o.manager_id = :manager_id
  AND o.stream_id = :stream_id
  AND o.status = 'shipped'
ORDER BY o.order_id;
