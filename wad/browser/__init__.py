"""WhatsApp Web in Chromium: the Playwright driver, the page bridge and its events."""

from wad.browser.driver import (
    BridgeError,
    BridgeTimeout,
    BrowserDriver,
    BrowserSession,
    BrowserStartError,
    InvalidChatId,
    SessionClosed,
    chat_id,
    new_message_id,
    phone_digits,
)

__all__ = [
    "BridgeError",
    "BridgeTimeout",
    "BrowserDriver",
    "BrowserSession",
    "BrowserStartError",
    "InvalidChatId",
    "SessionClosed",
    "chat_id",
    "new_message_id",
    "phone_digits",
]
