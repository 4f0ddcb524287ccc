"""The pieces of the inbound channel (the actor itself is `wad.org.inbound.actor`; its settings, the
`[inbound]` table, are `wad.config.InboundSettings`; which chats are stored is
`wad.whatsapp.chats`).

- `parse`: pure functions from WhatsApp's message Structs to rows (type
  mapping, media metadata, ack to status, the country of a number), reused by the importer;
- `names`: "my name is ..." in the seven languages;
- `pacing`: the per-organization limit on enrichment requests (sliding window, random pauses);
- `spool`: the append-only file that keeps events while the database is unreachable.
"""
