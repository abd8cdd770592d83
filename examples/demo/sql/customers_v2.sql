-- Customers, variant 2: the stream's customers in the two biggest cities.
SELECT c.customer_id, c.name, c.city, count(o.order_id) AS orders, round(sum(o.amount), 2) AS total
FROM customers c
JOIN orders o ON o.customer_id = c.customer_id
WHERE c.manager_id = :manager_id AND c.stream_id = :stream_id
  AND c.city IN ('Москва', 'Berlin')
GROUP BY c.customer_id, c.name, c.city
ORDER BY c.customer_id;
