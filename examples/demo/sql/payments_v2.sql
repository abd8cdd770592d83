-- Payments, variant 2: cash payments of the stream's orders.
SELECT p.payment_id, p.order_id, p.method, p.paid_at, p.amount
FROM payments p
JOIN orders o ON o.order_id = p.order_id
WHERE o.manager_id = :manager_id AND o.stream_id = :stream_id AND p.method = 'cash'
ORDER BY p.payment_id;
