DROP TABLE alert_events;
DROP TABLE alerts;
ALTER TABLE users DROP COLUMN webhook_secret;
