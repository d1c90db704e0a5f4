-- The pending index also carries expiry and visibility, so counting an inbox's depth (on every send)
-- and checking for a ready message (on every long-poll wake) read the index alone, not each row.
DROP INDEX deliveries_pending;
CREATE INDEX deliveries_pending ON deliveries (recipient_id, priority DESC, seq, expires_at, visible_at)
    WHERE state IN ('queued', 'leased');
