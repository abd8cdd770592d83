-- Customers, variant 1: customers of the stream with at least one order.
SELECT c.customer_id, c.name, c.city, count(o.order_id) AS orders, round(sum(o.amount), 2) AS total
FROM customers c
JOIN orders o ON o.customer_id = c.customer_id
WHERE c.manager_id = :manager_id AND c.stream_id = :stream_id
GROUP BY c.customer_id, c.name, c.city
ORDER BY c.customer_id;
