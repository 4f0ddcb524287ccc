-- The read API (issue 18): indexes that keep each of its pages an index range scan at a million
-- messages per organization. Pages are keyset pages (`wad.db.repo.read`): every order below ends
-- in the row's id, so that it is total and a cursor names one place in it.

-- Messages that share a second of WhatsApp's time (its clock has seconds) are ordered by arrival:
-- each row of a batch stored in one statement gets its own time, in the batch's order.
ALTER TABLE messages ALTER COLUMN created_at SET DEFAULT clock_timestamp();

-- A conversation's messages in order, either way: WhatsApp's time, then arrival, then id. It
-- also serves what the old (conversation_id, sent_at) index served.
CREATE INDEX messages_conversation_order ON messages (conversation_id, sent_at, created_at, id);
DROP INDEX messages_conversation;

-- A conversation's incoming and outgoing messages apart, in the same order: the time to first
-- answer (`wad.db.repo.answers`) looks up the next or previous message of one direction.
CREATE INDEX messages_conversation_direction ON messages (conversation_id, direction, sent_at,
                                                          created_at, id);

-- Clients in creation order, alone or by status or language; and those updated since a time.
CREATE INDEX clients_org_created ON clients (organization_id, created_at, id);
CREATE INDEX clients_org_status ON clients (organization_id, status, created_at, id);
CREATE INDEX clients_org_language ON clients (organization_id, preferred_language, created_at, id);
CREATE INDEX clients_org_updated ON clients (organization_id, updated_at);

-- A client's conversations.
CREATE INDEX conversations_client ON conversations (client_id, created_at, id);

-- Import runs in start order, either way (also the latest run).
CREATE INDEX import_runs_org_started ON import_runs (organization_id, started_at, id);
DROP INDEX import_runs_latest;
