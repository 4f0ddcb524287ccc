"""The pieces of the inbound channel (the actor itself is `wad.org.inbound`).

- `settings`: `InboundSettings`, the `[inbound]` table (delays, pacing, what to ignore);
- `parse`: pure functions from WhatsApp's message Structs to rows (chat id to E.164 phone, type
  mapping, media metadata, ack to status, the country of a number), reused by the importer;
- `names`: "my name is ..." in the seven languages;
- `pacing`: the per-organization limit on enrichment requests (sliding window, random pauses);
- `spool`: the append-only file that keeps events while the database is unreachable;
- `queries`: the statement the pipeline needs beyond the repositories.
"""
