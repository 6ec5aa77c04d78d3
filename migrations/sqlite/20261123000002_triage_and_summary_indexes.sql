-- Lookups made by triage (a reply's token) and by the weekly summary and agendas.
CREATE UNIQUE INDEX requests_token ON requests (token);
CREATE INDEX requests_decided ON requests (decided_at);
CREATE INDEX requests_meeting ON requests (decision, meeting_date);
CREATE INDEX request_events_kind ON request_events (kind, request_id);
CREATE INDEX thread_message_ids_request ON thread_message_ids (request_id);
