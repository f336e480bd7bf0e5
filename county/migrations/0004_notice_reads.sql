-- Who read which urgent notice at check-in (the stations' notice_read
-- records), looked up per notice on the notices page.
CREATE INDEX messages_notice_read ON messages ((body->>'notice')) WHERE kind = 'notice_read';
