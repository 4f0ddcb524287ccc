"""The historical import (`wad import`, SPEC section 5): an account's existing chats become
clients, conversations, messages and status history, resumably.

- `options`: `ImportOptions`, what one import is asked to do;
- `pacing`: `Pacer`, at most one WhatsApp request per interval (one a second by default);
- `sources`: where chats come from: the live WhatsApp session (chats listed in one request, whole
  pages of history per request) or an importer plugin (such as the bundled "Export chat" reader);
- `engine`: `Importer`, which turns each chat into rows (reusing the inbound channel's parsers
  and the plugins' language and status detection), one transaction per chat, and keeps the
  progress in `import_runs` so that a rerun resumes;
- `report`: the live progress, the final report and their text forms (the progress bar);
- `session`: the importer's own browser session when no daemon serves the organization;
- `local`: an import run by the `wad import` process itself (database, plugins, session);
- `service`: imports running inside the daemon on an organization's live session;
- `cli`: the `wad import` command.
"""
