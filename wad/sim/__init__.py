"""The WhatsApp Web simulator: a page implementing WAWEB.md, the phones behind it, and a
control surface under `/_sim/` (see `docs/simulator.md`)."""
