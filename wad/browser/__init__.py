"""WhatsApp Web in Chromium: the Playwright driver (`wad.browser.driver`), the page bridge
(`bridge.js`) and its events (`wad.browser.events`, which does not load Playwright)."""
