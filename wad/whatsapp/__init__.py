"""WhatsApp's vocabulary, pure (no I/O, no browser, no database): the forms of its ids
(`wad.whatsapp.ids`) and which chats wad stores (`wad.whatsapp.chats`).

Inbound, outbound, catch-up and the importer all ask these modules, so that a rule is written
once and a message looks the same whichever way it reached wad.
"""
